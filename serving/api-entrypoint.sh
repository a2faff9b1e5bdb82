#!/bin/sh
# Entrypoint of the API image (serving/api.Dockerfile): make sure the exported model is in place, then
# exec `biomedgpt serve` (its own configuration comes from BIOMEDGPT_SERVE_* variables and the arguments).
#
#   BIOMEDGPT_SERVE_MODEL   model folder (default /models/biomedgpt): a mounted export, or empty
#   BIOMEDGPT_MODEL_URL     tar.gz of an exported model folder, fetched only when that folder is empty
#   BIOMEDGPT_MODEL_SHA256  the tar.gz's sha256; required with the URL, so an unverified model is never served
#
# The archive may hold the model files at its top or inside one folder. It is downloaded and unpacked in a
# scratch folder inside the model folder, and the files move into place only once the checksum matched.
set -eu

model_dir="${BIOMEDGPT_SERVE_MODEL:-/models/biomedgpt}"

die() {
    echo "api-entrypoint: error: $*" >&2
    exit 1
}

fetch_model() {
    [ -n "${BIOMEDGPT_MODEL_URL:-}" ] ||
        die "$model_dir is empty and BIOMEDGPT_MODEL_URL is not set: mount an exported model there or give the URL of its tar.gz"
    [ -n "${BIOMEDGPT_MODEL_SHA256:-}" ] ||
        die "BIOMEDGPT_MODEL_URL is set but BIOMEDGPT_MODEL_SHA256 is not: the downloaded model must be verified"
    # Scratch space beside the files' final place: same file system, so the final moves are renames.
    scratch="$(mktemp -d "$model_dir/.fetch.XXXXXX")"
    trap 'rm -rf "$scratch"' EXIT INT TERM
    echo "api-entrypoint: fetching the model from $BIOMEDGPT_MODEL_URL" >&2
    python3 - "$BIOMEDGPT_MODEL_URL" "$scratch/model.tar.gz" <<'PY' || die "download failed: $BIOMEDGPT_MODEL_URL"
import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=60) as response, open(sys.argv[2], "wb") as out:
    shutil.copyfileobj(response, out, 1 << 20)
PY
    expected="$(printf '%s' "$BIOMEDGPT_MODEL_SHA256" | tr 'A-F' 'a-f')"
    actual="$(sha256sum "$scratch/model.tar.gz" | cut -d' ' -f1)"
    [ "$actual" = "$expected" ] || die "sha256 mismatch for $BIOMEDGPT_MODEL_URL: got $actual, expected $expected"
    mkdir "$scratch/unpacked"
    tar -xzf "$scratch/model.tar.gz" -C "$scratch/unpacked" --no-same-owner --no-same-permissions ||
        die "cannot unpack $BIOMEDGPT_MODEL_URL as tar.gz"
    src="$scratch/unpacked"
    # One top-level folder and nothing else: the model files are inside it.
    if [ "$(ls -A "$src" | wc -l)" -eq 1 ] && [ -d "$src/$(ls -A "$src")" ]; then
        src="$src/$(ls -A "$src")"
    fi
    [ -n "$(ls -A "$src")" ] || die "$BIOMEDGPT_MODEL_URL holds no files"
    find "$src" -mindepth 1 -maxdepth 1 -exec mv -t "$model_dir" {} +
    rm -rf "$scratch"
    trap - EXIT INT TERM
    echo "api-entrypoint: model unpacked into $model_dir" >&2
}

mkdir -p "$model_dir" 2>/dev/null || true
[ -d "$model_dir" ] || die "model folder $model_dir does not exist and cannot be created"
rm -rf "$model_dir"/.fetch.* # left by a start that was killed while fetching
if [ -z "$(ls -A "$model_dir")" ]; then
    fetch_model
fi
exec biomedgpt serve --model "$model_dir" "$@"
