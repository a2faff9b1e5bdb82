"""DICOM de-identification following the PS3.15 Annex E Basic Application Level Confidentiality Profile.

The action table below is DICOM PS3.15 Table E.1-1 ("Basic Prof." column, edition 2026c), written as
pydicom keywords (an eight-digit hex tag where pydicom 3.0's dictionary has no keyword yet). Where
the profile allows a choice, this module always takes the same one:

- ``X`` and ``X/D``, ``X/Z/D``: the element is removed.
- ``Z``, ``X/Z``, ``Z/D``: the element is kept with a zero-length value (an empty sequence for SQ).
- ``D``: a dummy value ("ANONYMIZED" for text and names, a new UID for UI, an empty sequence for SQ);
  for binary or numeric VRs the element is removed.
- ``U``: the UID is replaced by ``derive_uid(uid, salt=...)``: ``2.25.`` + 128 bits of
  HMAC-SHA256(salt, uid). The same salt maps the same UID to the same new UID, so series and study
  membership survive across the files of one run; a different salt gives unrelated UIDs.
- ``X/Z/U*`` (referenced/source image sequences): kept, and the UIDs inside are replaced as ``U``.
- Dates and times are blanked (or removed), never shifted: ``LongitudinalTemporalInformationModified``
  is set to ``REMOVED``. No dummy dates are written, even for ``D``.

Beyond the table, as the profile requires or allows: all private elements are removed (the profile's
default without the Retain Safe Private option), curves (groups 50xx) and overlays (groups 60xx) are
removed, as is the file meta's PrivateInformation; as a safety net every PN element is emptied, every DA/DT/TM element is emptied, every AE
title is removed and every UI value that is not a registered well-known UID (or a ``*ClassUID``) is
replaced. Sequences are walked recursively and the file meta group is processed too. Finally
``PatientIdentityRemoved`` = ``YES``, ``DeidentificationMethod`` and
``DeidentificationMethodCodeSequence`` (DCM 113100) are set.

Burned-in text cannot be removed from pixels here: ``refuse_burned_in`` rejects images whose
``BurnedInAnnotation`` is ``YES`` unless the caller opts in.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import asdict, dataclass, field
from os import PathLike

from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

METHOD = "PS3.15 Annex E Basic Profile; dates blanked; UIDs salted hash"  # LO: at most 64 characters
DUMMY_TEXT = "ANONYMIZED"

# PS3.15 Table E.1-1, basic profile column, grouped by action (see the module docstring).
_TABLE_TEXT: dict[str, str] = {
    "X": """
    00081301 00081302 00081303 00081304 00100011 00100012 00100013 00100014 00100015 00100016 00100041
    00100042 00100043 00100044 00100045 00100046 00100047 00102162 0040A034 0040A035 0040B034 0040B036
    0040B03B 0040B03F 0040E012 AcquisitionComments AcquisitionContextDescription
    AcquisitionProtocolDescription ActualHumanPerformersSequence AdditionalPatientHistory AddressTrial
    AdmissionID AdmittingDate AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription AdmittingTime
    AffectedSOPInstanceUID Allergies AnnotationGroupDescription ApprovalStatusDateTime Arbitrary
    AssertionExpirationDateTime AuthorObserverSequence BeamDescription BolusDescription BranchOfService
    CalibrationDate CalibrationTime CameraOwnerName CassetteID CertifiedTimestamp
    ChannelDerivationDescription ChannelLabel ClinicalTrialProtocolEthicsCommitteeApprovalNumber
    ClinicalTrialSeriesDescription ClinicalTrialSeriesID ClinicalTrialTimePointDescription
    CommentsOnRadiationDose CommentsOnThePerformedProcedureStep CompensatorDescription
    ConfidentialityConstraintOnPatientDataDescription ConsultingPhysicianIdentificationSequence
    ContainerComponentID ContainerDescription ContentCreatorIdentificationCodeSequence
    ContrastBolusStartTime ContrastBolusStopTime ContributionDateTime ContributionDescription
    CountryOfResidence CreationDate CreationTime CurrentObserverTrial CurrentPatientLocation CurveDate
    CurveTime CustodialOrganizationSequence DataSetTrailingPadding DateOfDocumentOrVerbalTransactionTrial
    DateOfInstallation DateOfLastCalibration DateOfManufacture DateOfSecondaryCapture
    DateTimeOfLastCalibration DecompositionDescription DerivationDescription DeviceDescription
    DeviceSettingDescription DigitalSignaturesSequence DischargeDate DischargeDiagnosisDescription
    DischargeTime DisplacementReferenceLabel DistributionAddress DistributionName DoseReferenceDescription
    EntityDescription EntityName EquipmentFrameOfReferenceDescription
    EthicsCommitteeApprovalEffectivenessEndDate EthicsCommitteeApprovalEffectivenessStartDate EthnicGroup
    EthnicGroupCodeSequence ExpectedCompletionDateTime FilterLookupTableDescription
    FindingsGroupRecordingDateTrial FindingsGroupRecordingTimeTrial FixationDeviceDescription
    FractionGroupDescription FrameComments GPSAltitude GPSAltitudeRef GPSAreaInformation GPSDOP GPSDateStamp
    GPSDestBearing GPSDestBearingRef GPSDestDistance GPSDestDistanceRef GPSDestLatitude GPSDestLatitudeRef
    GPSDestLongitude GPSDestLongitudeRef GPSDifferential GPSImgDirection GPSImgDirectionRef GPSLatitude
    GPSLatitudeRef GPSLongitude GPSLongitudeRef GPSMapDatum GPSMeasureMode GPSProcessingMethod GPSSatellites
    GPSSpeed GPSSpeedRef GPSStatus GPSTimeStamp GPSTrack GPSTrackRef GPSVersionID GantryID GeneratorID
    HL7DocumentEffectiveTime HardcopyCreationDeviceID HumanPerformerName HumanPerformerOrganization
    IconImageSequence IdentifyingComments ImageComments ImagePresentationComments
    ImagingServiceRequestComments Impressions InstanceCoercionDateTime InstanceOriginStatus
    InstitutionAddress InstitutionalDepartmentName InstitutionalDepartmentTypeCodeSequence
    InsurancePlanIdentification IntendedFractionStartTime IntendedRecipientsOfResultsIdentificationSequence
    InterpretationApprovalDate InterpretationApprovalTime InterpretationApproverSequence
    InterpretationAuthor InterpretationDiagnosisDescription InterpretationID InterpretationIDIssuer
    InterpretationRecordedDate InterpretationRecordedTime InterpretationRecorder InterpretationText
    InterpretationTranscriber InterpretationTranscriptionDate InterpretationTranscriptionTime
    InterventionDrugStartTime InterventionDrugStopTime IssueDateOfImagingServiceRequest
    IssueTimeOfImagingServiceRequest IssuerOfAdmissionID IssuerOfAdmissionIDSequence
    IssuerOfClinicalTrialProtocolID IssuerOfClinicalTrialSeriesID IssuerOfClinicalTrialSiteID
    IssuerOfClinicalTrialSubjectID IssuerOfClinicalTrialSubjectReadingID IssuerOfClinicalTrialTimePointID
    IssuerOfPatientID IssuerOfServiceEpisodeID IssuerOfServiceEpisodeIDSequence LastMenstrualDate LensMake
    LensModel LensSerialNumber LensSpecification LongDeviceDescription MAC MakerNote MedicalAlerts
    MedicalRecordLocator MilitaryRank ModifiedAttributesSequence ModifiedImageDate ModifiedImageDescription
    ModifiedImageTime ModifyingDeviceID MultienergyAcquisitionDescription MultiplexGroupLabel
    NameOfPhysiciansReadingStudy NamesOfIntendedRecipientsOfResults NetworkID NonconformingDataElementValue
    NonconformingModifiedAttributesSequence ObservationDateTrial ObservationStartDateTime
    ObservationTimeTrial Occupation OrderCallbackPhoneNumber OrderCallbackTelecomInformation OrderEnteredBy
    OrderEntererLocation OriginalAttributesSequence Originator OtherClinicalTrialProtocolIDsSequence
    OtherPatientIDs OtherPatientIDsSequence OtherPatientNames OverlayDate OverlayTime ParticipantSequence
    PatientAddress PatientAge PatientBirthName PatientBirthTime PatientComments PatientInstitutionResidence
    PatientInsurancePlanCodeSequence PatientMotherBirthName PatientPrimaryLanguageCodeSequence
    PatientPrimaryLanguageModifierCodeSequence PatientReligiousPreference PatientSetupPhotoDescription
    PatientSize PatientState PatientTelecomInformation PatientTelephoneNumbers PatientTransportArrangements
    PatientTreatmentPreparationMethodDescription PatientTreatmentPreparationProcedureParameterDescription
    PatientWeight PerformedLocation PerformedProcedureStepDescription PerformedProcedureStepEndDate
    PerformedProcedureStepEndDateTime PerformedProcedureStepEndTime PerformedProcedureStepID
    PerformedProcedureStepStartDate PerformedProcedureStepStartDateTime PerformedProcedureStepStartTime
    PerformedStationAETitle PerformedStationGeographicLocationCodeSequence PerformedStationName
    PerformedStationNameCodeSequence PerformingPhysicianIdentificationSequence PerformingPhysicianName
    PersonAddress PersonTelecomInformation PersonTelephoneNumbers PhysicianApprovingInterpretation
    PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence PhysiciansReadingStudyIdentificationSequence
    PlateID PositionAcquisitionTemplateDescription PositionAcquisitionTemplateName PreMedication
    PregnancyStatus PrescriptionDescription PresentationCreationDate PresentationCreationTime
    PriorTreatmentDoseDescription ProcedureStepCancellationDateTime ProductExpirationDateTime
    PyramidDescription PyramidLabel ROICreatorSequence ROIDateTime ROIDescription ROIGenerationDescription
    ROIInterpreterSequence ROIObservationDateTime ROIObservationDescription ROIObservationLabel
    RTPlanDescription RTPlanName RadiopharmaceuticalStartDateTime RadiopharmaceuticalStartTime
    RadiopharmaceuticalStopDateTime RadiopharmaceuticalStopTime ReasonForOmissionDescription
    ReasonForRequestedProcedureCodeSequence ReasonForStudy ReasonForTheImagingServiceRequest
    ReasonForTheRequestedProcedure ReasonForVisit ReasonForVisitCodeSequence ReceivingAE
    ReferencedDigitalSignatureSequence ReferencedPatientAliasSequence ReferencedPatientPhotoSequence
    ReferencedPatientSequence ReferencedSOPInstanceMACSequence ReferringPhysicianAddress
    ReferringPhysicianIdentificationSequence ReferringPhysicianTelephoneNumbers RegionOfResidence
    RequestAttributesSequence RequestedContrastAgent RequestedProcedureComments RequestedProcedureID
    RequestedProcedureLocation RequestedSeriesDescription RequestingAE RequestingPhysician RequestingService
    RespiratoryMotionCompensationTechniqueDescription ResponsibleOrganization ResponsiblePerson
    ResultsComments ResultsDistributionListSequence ResultsID ResultsIDIssuer RetrieveAETitle
    SOPAuthorizationDateTime ScheduledAdmissionDate ScheduledAdmissionTime ScheduledDischargeDate
    ScheduledDischargeTime ScheduledHumanPerformersSequence ScheduledPatientInstitutionResidence
    ScheduledPerformingPhysicianIdentificationSequence ScheduledPerformingPhysicianName
    ScheduledProcedureStepDescription ScheduledProcedureStepEndDate ScheduledProcedureStepEndTime
    ScheduledProcedureStepExpirationDateTime ScheduledProcedureStepID ScheduledProcedureStepLocation
    ScheduledProcedureStepModificationDateTime ScheduledProcedureStepStartDate
    ScheduledProcedureStepStartDateTime ScheduledProcedureStepStartTime ScheduledStationAETitle
    ScheduledStationGeographicLocationCodeSequence ScheduledStationName ScheduledStationNameCodeSequence
    ScheduledStudyLocation ScheduledStudyLocationAETitle ScheduledStudyStartDate ScheduledStudyStartTime
    ScheduledStudyStopDate ScheduledStudyStopTime SecondaryCaptureDeviceID SeriesDescription
    ServiceEpisodeDescription ServiceEpisodeID SetupTechniqueDescription ShieldingDeviceDescription
    SlideIdentifier SmokingStatus SourceManufacturer SpecialNeeds SpecimenAccessionNumber
    SpecimenDetailedDescription SpecimenShortDescription StationAETitle StructureSetDescription
    StructureSetName StudyArrivalDate StudyArrivalTime StudyComments StudyCompletionDate StudyCompletionTime
    StudyDescription StudyIDIssuer StudyReadDate StudyReadTime StudyVerifiedDate StudyVerifiedTime
    SubstanceAdministrationDateTime TelephoneNumberTrial TemplateLocalVersion TemplateVersion TextComments
    TextString TimeOfDocumentCreationOrVerbalTransactionTrial TimeOfLastCalibration TimeOfSecondaryCapture
    TimezoneOffsetFromUTC TopicAuthor TopicKeywords TopicSubject TopicTitle TransducerIdentificationSequence
    TreatmentSites UDISequence UniqueDeviceIdentifier VerbalSourceIdentifierCodeSequenceTrial
    VerbalSourceTrial VisitComments WaveformFilterDescription XRayDetectorLabel
    """,
    "Z": """
    AccessionNumber CalibrationDateTime ClinicalTrialCoordinatingCenterName ClinicalTrialProtocolName
    ClinicalTrialSiteID ClinicalTrialSiteName ClinicalTrialTimePointID
    ConceptualVolumeCombinationDescription ConceptualVolumeDescription ConsultingPhysicianName
    DeviceAlternateIdentifier FillerOrderNumberImagingServiceRequest FractionationNotes
    IssuerOfTheContainerIdentifierSequence IssuerOfTheSpecimenIdentifierSequence
    ManufacturerDeviceIdentifier ParticipationDateTime PatientBirthDate PatientName PatientSex
    PlacerOrderNumberImagingServiceRequest PrescriptionNotes PrescriptionNotesSequence ROIInterpreter
    ROIName RTAccessoryDeviceSlotID RTAccessoryHolderSlotID RTPhysicianIntentNarrative
    RadiationGenerationModeDescription ReasonForSuperseding ReferringPhysicianName ReviewDate ReviewTime
    SourceOfPreviousValues SpecimenPreparationSequence StructureSetDate StructureSetTime StudyDate StudyID
    StudyTime TreatmentTechniqueNotes VerifyingObserverIdentificationCodeSequence
    """,
    "D": """
    AcquisitionFieldOfViewLabel AnnotationGroupLabel AnnotationGroupUID AssertionDateTime
    AttributeModificationDateTime BeamHoldTransitionDateTime CertificateOfSigner
    ClinicalTrialProtocolEthicsCommitteeName ClinicalTrialProtocolID ClinicalTrialSponsorName
    ClinicalTrialSubjectID ClinicalTrialSubjectReadingID ContainerIdentifier ContentSequence
    ContextGroupLocalVersion ContextGroupVersion Date DateTime DecayCorrectionDateTime DestinationAE
    DeviceLabel DigitalSignatureDateTime EffectiveDateTime EncapsulatedDocument EntityLabel EntityLongLabel
    ExclusionStartDateTime FlowIdentifier FlowIdentifierSequence FrameAcquisitionDateTime
    FrameOriginTimestamp FrameReferenceDateTime FunctionalSyncPulse GraphicAnnotationSequence
    HangingProtocolCreationDateTime ImpedanceMeasurementDateTime InformationIssueDateTime InterlockDateTime
    InterlockDescription InterlockOriginDescription ModifyingSystem OverrideDateTime
    PersonIdentificationCodeSequence PersonName RTPlanLabel RTPrescriptionLabel RTToleranceSetLabel
    RadiationDoseIdentificationLabel RadiationDoseInVivoMeasurementLabel RadiationGenerationModeLabel
    ReasonForTheAttributeModification RecordedRTControlPointDateTime ReferencedDateTime SafePositionExitDate
    SafePositionExitTime SafePositionReturnDate SafePositionReturnTime SelectorAEValue SelectorASValue
    SelectorDAValue SelectorDTValue SelectorLOValue SelectorLTValue SelectorOBValue SelectorPNValue
    SelectorSHValue SelectorSTValue SelectorTMValue SelectorUNValue SelectorURValue SelectorUTValue
    SourceEndDateTime SourceIdentifier SourceStartDateTime SourceStrengthReferenceDate
    SourceStrengthReferenceTime SpecimenIdentifier StructureSetLabel Time TreatmentControlPointDate
    TreatmentControlPointTime TreatmentPositionGroupLabel TreatmentToleranceViolationDateTime
    TreatmentToleranceViolationDescription UnformattedTextValue UserContentLabel UserContentLongLabel
    VerificationDateTime VerifyingObserverName VerifyingObserverSequence VerifyingOrganization
    XRayDetectorID XRaySourceID
    """,
    "U": """
    AcquisitionUID ConcatenationUID ConceptualVolumeUID ConstituentConceptualVolumeUID DeviceUID
    DigitalSignatureUID DimensionOrganizationUID DoseReferenceUID DosimetricObjectiveUID
    FailedSOPInstanceUIDList FiducialUID FrameOfReferenceUID InstanceCreatorUID IrradiationEventUID
    LargePaletteColorLookupTableUID ManufacturerDeviceClassUID MediaStorageSOPInstanceUID MultiplexGroupUID
    ObservationSubjectUIDTrial ObservationUID PaletteColorLookupTableUID PatientSetupUID
    PresentationDisplayCollectionUID PresentationSequenceCollectionUID PyramidUID RTTreatmentPhaseUID
    ReferencedConceptualVolumeUID ReferencedDoseReferenceUID ReferencedDosimetricObjectiveUID
    ReferencedFiducialsUID ReferencedFrameOfReferenceUID
    ReferencedGeneralPurposeScheduledProcedureStepTransactionUID ReferencedObservationUIDTrial
    ReferencedSOPInstanceUID ReferencedSOPInstanceUIDInFile ReferencedTreatmentPositionGroupUID
    RelatedFrameOfReferenceUID RequestedSOPInstanceUID SOPInstanceUID SeriesInstanceUID
    SourceConceptualVolumeUID SourceFrameOfReferenceUID SpecimenUID StorageMediaFileSetUID StudyInstanceUID
    SynchronizationFrameOfReferenceUID TableTopPositionAlignmentUID TargetUID TemplateExtensionCreatorUID
    TemplateExtensionOrganizationUID TrackingUID TransactionUID TreatmentPositionGroupUID
    TreatmentSessionUID UID
    """,
    "Z/D": """
    ContentCreatorName ContentDate ContentTime ContrastBolusAgent InstructionPerformedDateTime PatientID
    """,
    "X/Z": """
    AcquisitionContextSequence AcquisitionDate AcquisitionTime BarcodeValue LabelText PatientSexNeutered
    ReferencedStudySequence RequestedProcedureDescription ReviewerName SourceSerialNumber
    TreatmentMachineName
    """,
    "X/D": """
    AcquisitionDeviceProcessingDescription DateOfLastDetectorCalibration DetectorID EndAcquisitionDateTime
    FirstTreatmentDate InstanceCreationDate IntendedPhaseEndDate IntendedPhaseStartDate
    MostRecentTreatmentDate ObservationDateTime OperatorIdentificationSequence ProtocolName RTPlanDate
    RTPlanTime RTTreatmentApproachLabel SeriesDate SeriesTime StartAcquisitionDateTime
    TimeOfLastDetectorCalibration TreatmentDate TreatmentSite TreatmentTime WaveformAnnotationSequence
    """,
    "X/Z/D": """
    AcquisitionDateTime DeviceSerialNumber InstanceCreationTime InstitutionCodeSequence InstitutionName
    OperatorsName ReferencedPerformedProcedureStepSequence StationName
    """,
    "X/Z/U*": """
    ReferencedImageSequence SourceImageSequence
    """,
}

# The one choice this module makes for each profile action (see the module docstring).
_RESOLVE = {"X": "remove", "X/D": "remove", "X/Z/D": "remove", "Z": "empty", "X/Z": "empty",
            "Z/D": "empty", "D": "dummy", "U": "uid", "X/Z/U*": "walk"}  # fmt: skip

PROFILE_ACTIONS: dict[str, str] = {
    name: action for action, text in _TABLE_TEXT.items() for name in text.split()
}
"""Table E.1-1 as ``{keyword or 8-hex-digit tag: profile action}``."""

# File meta private information may hold anything and is not in the table: removed.
_EXTRA_REMOVE = {"PrivateInformation", "PrivateInformationCreatorUID"}
_TEXT_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT", "AS"}
_DATE_VRS = {"DA", "DT", "TM"}


class BurnedInAnnotationError(ValueError):
    """The image declares burned-in annotation (text in the pixels) and the caller did not opt in."""


@dataclass(frozen=True, kw_only=True)
class DeidReport:
    """What ``deidentify`` did: keywords (or ``(gggg,eeee)`` tags) per action, sorted and unique."""

    removed: tuple[str, ...]
    """Elements deleted (table X actions, curves, overlays, AE titles)."""
    emptied: tuple[str, ...]
    """Elements kept with a zero-length value (names, IDs, dates, times)."""
    replaced: tuple[str, ...]
    """Elements given a dummy value or a salted-hash UID."""
    private_removed: int
    """Number of private elements deleted (private creators included), counted in all sequences."""
    method: str = METHOD
    """The text written into ``DeidentificationMethod``."""

    @property
    def touched(self) -> tuple[str, ...]:
        """Every keyword removed, emptied or replaced."""
        return tuple(sorted({*self.removed, *self.emptied, *self.replaced}))

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready form (for shard manifests and logs)."""
        return asdict(self)


@dataclass
class _Acc:
    removed: set[str] = field(default_factory=set)
    emptied: set[str] = field(default_factory=set)
    replaced: set[str] = field(default_factory=set)
    private_removed: int = 0


def derive_uid(uid: str, *, salt: str) -> str:
    """A new UID for ``uid``: ``2.25.`` + a version-8 UUID from HMAC-SHA256(salt, uid) (deterministic)."""
    digest = bytearray(hmac.new(salt.encode(), uid.strip().encode(), hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # UUID version 8 (custom), RFC 9562
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC variant
    return f"2.25.{int.from_bytes(digest, 'big')}"


def _name(elem: DataElement) -> str:
    return elem.keyword or keyword_for_tag(elem.tag) or f"{int(elem.tag):08X}"


def _table_action(elem: DataElement) -> str | None:
    action = PROFILE_ACTIONS.get(elem.keyword) if elem.keyword else None
    return action or PROFILE_ACTIONS.get(f"{int(elem.tag):08X}")


def _is_well_known_uid(elem: DataElement, value: str) -> bool:
    return elem.keyword.endswith("ClassUID") or value in UID_dictionary


def _new_uids(elem: DataElement, salt: str, *, force: bool) -> None:
    values = list(elem.value) if elem.VM > 1 else [elem.value]
    out = [v if not v or (not force and _is_well_known_uid(elem, str(v))) else derive_uid(str(v), salt=salt)
           for v in values]  # fmt: skip
    elem.value = out if elem.VM > 1 else out[0]


def _generic_action(elem: DataElement) -> str | None:
    """Safety net for elements the table does not list."""
    group = elem.tag.group
    if 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF or elem.keyword in _EXTRA_REMOVE:
        return "remove"  # curves, overlays, file meta private information
    if elem.VR == "AE":
        return "remove"
    if elem.VR == "PN" or elem.VR in _DATE_VRS:
        return "empty"
    if elem.VR == "UI":
        return "uid-if-instance"
    return None


def _apply(ds: Dataset, elem: DataElement, action: str, salt: str, acc: _Acc) -> bool:
    """Apply one resolved action; returns True when the element is gone."""
    name = _name(elem)
    if action == "dummy" and elem.VR in _DATE_VRS:
        action = "empty"  # dates are never given dummy values (see the module docstring)
    if action == "dummy" and elem.VR not in _TEXT_VRS | {"UI", "SQ"}:
        action = "remove"
    if action == "remove":
        del ds[elem.tag]
        acc.removed.add(name)
        return True
    if action == "empty" or (action == "dummy" and elem.VR == "SQ"):
        elem.value = elem.empty_value
        (acc.emptied if action == "empty" else acc.replaced).add(name)
    elif action == "dummy" and elem.VR != "UI":
        elem.value = DUMMY_TEXT
        acc.replaced.add(name)
    elif action in {"uid", "dummy", "uid-if-instance"} and elem.VR == "UI" and not elem.is_empty:
        before = elem.value
        _new_uids(elem, salt, force=action != "uid-if-instance")
        if elem.value != before:
            acc.replaced.add(name)
    return False


def _walk(ds: Dataset, salt: str, acc: _Acc) -> None:
    for elem in list(ds):
        if elem.tag.is_private:
            del ds[elem.tag]
            acc.private_removed += 1
            continue
        table = _table_action(elem)
        action = _RESOLVE[table] if table else _generic_action(elem)
        if action not in (None, "walk") and _apply(ds, elem, action, salt, acc):
            continue
        if elem.VR == "SQ":
            for item in elem.value:
                _walk(item, salt, acc)


def _mark(ds: Dataset) -> None:
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = [code]
    ds.LongitudinalTemporalInformationModified = "REMOVED"


def deidentify(ds: Dataset, *, salt: str) -> DeidReport:
    """De-identify ``ds`` in place (file meta included) with the basic profile; returns the report."""
    if not salt:
        raise ValueError("deidentify needs a non-empty salt (it keys the UID hash)")
    acc = _Acc()
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None:
        _walk(file_meta, salt, acc)
    _walk(ds, salt, acc)
    _mark(ds)
    return DeidReport(
        removed=tuple(sorted(acc.removed)),
        emptied=tuple(sorted(acc.emptied)),
        replaced=tuple(sorted(acc.replaced)),
        private_removed=acc.private_removed,
    )


def refuse_burned_in(ds: Dataset, *, source: str | PathLike[str], allow: bool) -> None:
    """Raise ``BurnedInAnnotationError`` naming ``source`` if ``BurnedInAnnotation`` is YES and not allowed.

    An absent flag is not treated as YES (most files omit it); modalities that often carry burned-in
    text (US, SC) need a look at their pixels before they are published.
    """
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES" and not allow:
        raise BurnedInAnnotationError(
            f"{source}: BurnedInAnnotation is YES (identifying text may be in the pixels, which "
            "de-identification cannot remove); pass allow_burned_in=True only after checking the image"
        )
