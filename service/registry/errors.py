"""Errors of the registry: models, datasets, suites and their bundles."""

from __future__ import annotations

from service.errors import Conflict, Forbidden, NotFound, PayloadTooLarge, Unprocessable

# -- names and references ----------------------------------------------------------------------------------


class InvalidName(Unprocessable):
    """A name is not 1-64 characters of a-z, 0-9, `_`, `.` and `-` (starting with a letter or digit)."""

    code = "invalid_name"


class InvalidVersion(Unprocessable):
    """A version is not 1-32 characters of A-Z, a-z, 0-9, `.`, `_`, `+` and `-`."""

    code = "invalid_version"


class InvalidReference(Unprocessable):
    """A model, dataset or suite is not given as `name@version` (a suite may also be given as
    `owner/name@version`)."""

    code = "invalid_reference"


class UnknownModelVersion(NotFound):
    """No model version of that name and version; `alternatives` lists the versions of that name."""

    code = "unknown_model_version"


class UnknownDatasetVersion(NotFound):
    """No dataset version of that name and version; `alternatives` lists the versions of that name."""

    code = "unknown_dataset_version"


class UnknownSuiteVersion(NotFound):
    """No suite version by that reference that the caller may use (its own, published or built-in;
    another partner's unpublished suite answers exactly as one that does not exist); `alternatives`
    lists, as `owner/name@version`, the versions of that name the caller may use."""

    code = "unknown_suite_version"


class VersionTaken(Conflict):
    """This name@version is already registered with different content (for a suite: in the uploader's
    own namespace); register it under a new version."""

    code = "version_taken"


class SuiteNameReserved(Forbidden):
    """The suite is named like a built-in suite (their names are reserved, unless you uploaded suites
    of that name before the built-in one shipped), or the uploader's name is the built-in namespace;
    upload it under another name."""

    code = "suite_name_reserved"


class NotSuiteOwner(Forbidden):
    """Only a suite's owner or an operator may publish or withdraw it."""

    code = "not_suite_owner"


class BuiltinSuiteAlwaysPublished(Conflict):
    """A built-in suite is usable by every partner and cannot be withdrawn."""

    code = "builtin_suite_always_published"


# -- models and datasets -------------------------------------------------------------------------------------


class InvalidModel(Unprocessable):
    """The file is not an ONNX model that onnxruntime can load."""

    code = "invalid_model"


class InvalidDataset(Unprocessable):
    """The file is not an `.npz` (without pickles) holding exactly a 2-D numeric `x` and 1-D integer
    labels `y` 0..k-1, one per row."""

    code = "invalid_dataset"


class DatasetTooSmall(Unprocessable):
    """The dataset version has fewer rows than the deployment's smallest allowed dataset
    (`EVALGATE_MIN_DATASET_ROWS`)."""

    code = "dataset_too_small"


class DatasetHasNan(Unprocessable):
    """The features hold NaN or infinite values; register with `allow_nan=true` to accept them
    knowingly (the suites then see them as they are)."""

    code = "dataset_has_nan"


class DatasetEmptyClass(Unprocessable):
    """A class in 0..k-1 has no rows (labels must be 0..k-1 with every class present)."""

    code = "dataset_empty_class"


class InvalidVisibility(Unprocessable):
    """A dataset's visibility must be `private` or `public`."""

    code = "invalid_visibility"


class InvalidStatus(Unprocessable):
    """A model or dataset version's status must be `active`, `deprecated` or `retired`."""

    code = "invalid_status"


class InvalidTransition(Conflict):
    """A model or dataset version's lifecycle only moves forward: active → deprecated → retired."""

    code = "invalid_transition"


class ModelRetired(Forbidden):
    """The model version is retired and takes no new jobs; `alternatives` lists active versions."""

    code = "model_retired"


class DatasetRetired(Forbidden):
    """The dataset version is retired and takes no new jobs; `alternatives` lists the active versions
    of the same dataset."""

    code = "dataset_retired"


class ModelDatasetMismatch(Unprocessable):
    """The model cannot be evaluated on this dataset: `detail` says what does not fit (the input's
    features or dtype, the number of classes, the kind of targets); `alternatives` lists dataset
    versions that fit the model."""

    code = "model_dataset_mismatch"


class ModelOutputAmbiguous(Unprocessable):
    """The model has several score outputs: name the one to read with `output`; `alternatives` lists them."""

    code = "model_output_ambiguous"


class UnknownModelOutput(Unprocessable):
    """`output` names no output of the model that a built-in suite can read; `alternatives` lists those it can."""

    code = "unknown_model_output"


class ModelContractUnknown(Unprocessable):
    """How to read the model's outputs could not be told (`detail` says why); an operator registers it
    again with `output_kind` and `classes`."""

    code = "model_contract_unknown"


class InvalidOutputPolicy(Unprocessable):
    """A model's output policy must be `full`, `rounded:D` (D digits, 1-6), `top_k:K` or `labels`."""

    code = "invalid_output_policy"


class ModelTooLarge(PayloadTooLarge):
    """The model file is larger than the deployment's limit (`EVALGATE_MODEL_MAX_BYTES`)."""

    code = "model_too_large"


class DatasetTooLarge(PayloadTooLarge):
    """The dataset file is larger than the deployment's limit (`EVALGATE_DATASET_MAX_BYTES`)."""

    code = "dataset_too_large"


# -- suite bundles -----------------------------------------------------------------------------------------------


class BundleTooLarge(PayloadTooLarge):
    """The suite bundle is larger than the deployment's limit (`EVALGATE_BUNDLE_MAX_BYTES`)."""

    code = "bundle_too_large"


class BundleTooLargeUnpacked(PayloadTooLarge):
    """The suite bundle unpacks to more than the limit (`EVALGATE_BUNDLE_MAX_UNPACKED_BYTES`)."""

    code = "bundle_too_large_unpacked"


class BundleUnreadable(Unprocessable):
    """The bundle is not a readable `.tar.gz` or `.zip`, or one of its members is corrupt."""

    code = "invalid_bundle"


class BundleUnknownFormat(Unprocessable):
    """The bundle is neither a `.tar.gz` nor a `.zip` archive."""

    code = "bundle_unknown_format"


class BundleBadPath(Unprocessable):
    """A member's name is empty, has a NUL or a backslash, or names nothing."""

    code = "bundle_bad_path"


class BundleAbsolutePath(Unprocessable):
    """A member's name is an absolute path."""

    code = "bundle_absolute_path"


class BundlePathTraversal(Unprocessable):
    """A member's name leaves the bundle through `..`."""

    code = "bundle_path_traversal"


class BundleLink(Unprocessable):
    """The bundle holds a symbolic or hard link; bundles hold regular files and directories only."""

    code = "bundle_link"


class BundleSpecialFile(Unprocessable):
    """The bundle holds a device, a FIFO or another special file."""

    code = "bundle_special_file"


class BundleEncrypted(Unprocessable):
    """The zip bundle has encrypted members."""

    code = "bundle_encrypted"


class BundleDuplicateMember(Unprocessable):
    """Two members of the bundle have the same name."""

    code = "bundle_duplicate_member"


class BundleTooManyFiles(Unprocessable):
    """The bundle holds more files than the limit (`EVALGATE_BUNDLE_MAX_FILES`)."""

    code = "bundle_too_many_files"


class BundleTooManyDirs(Unprocessable):
    """The bundle holds more directories, named or implied by its members' paths, than the limit
    (`EVALGATE_BUNDLE_MAX_DIRS`)."""

    code = "bundle_too_many_dirs"


class BundleTooDeep(Unprocessable):
    """A member's path has more components than the limit (`EVALGATE_BUNDLE_MAX_DEPTH`)."""

    code = "bundle_too_deep"


class BundlePathTooLong(Unprocessable):
    """A member's path is longer, in UTF-8 bytes, than the limit (`EVALGATE_BUNDLE_MAX_PATH_BYTES`)."""

    code = "bundle_path_too_long"


class BundleNameTooLong(Unprocessable):
    """One component of a member's path is longer, in UTF-8 bytes, than the limit
    (`EVALGATE_BUNDLE_MAX_NAME_BYTES`, at most 255)."""

    code = "bundle_name_too_long"


class BundleNameNotUtf8(Unprocessable):
    """A member's name is not valid UTF-8 (tar: the raw name bytes, long names included; zip: the
    name bytes, whether or not the archive flags them as UTF-8)."""

    code = "bundle_name_not_utf8"


class BundleNameControlCharacter(Unprocessable):
    """A member's name holds a control character (newline, escape, DEL, C1) or an invisible format
    character (such as a bidirectional override or a line separator)."""

    code = "bundle_name_control_character"


class BundleNonCanonicalPath(Unprocessable):
    """A member's path has an empty (`a//b`) or `.` (`a/./b`) component; only one leading `./`, as
    `tar -C dir .` writes, is accepted."""

    code = "bundle_non_canonical_path"


class BundleFileDirCollision(Unprocessable):
    """One path is both a file and a directory in the bundle (members `a` and `a/b`, in either order)."""

    code = "bundle_file_dir_collision"


class BundleNameCollision(Unprocessable):
    """Two members' paths differ only in letter case or Unicode normalisation form, and would be one
    file on many filesystems."""

    code = "bundle_name_collision"


class BundleFileTooLarge(PayloadTooLarge):
    """A file of the bundle unpacks to more than the limit (`EVALGATE_BUNDLE_MAX_FILE_BYTES`)."""

    code = "bundle_file_too_large"


class BundleTooCompressed(PayloadTooLarge):
    """The bundle, or one zip member, unpacks to more than `EVALGATE_BUNDLE_MAX_RATIO` times its packed
    size (plus 1 MiB): a decompression bomb. For `.tar.gz` the gzip stream is cut as it is read."""

    code = "bundle_too_compressed"


class BundleNoManifest(Unprocessable):
    """The bundle has no `suite.yaml` at its top level."""

    code = "bundle_no_manifest"


class SuiteExceedsLeakagePolicy(Unprocessable):
    """A metric the suite declares could carry more bits than one metric may (`EVALGATE_METRIC_MAX_BITS`:
    its range over its release grid is too wide); `detail` names each such metric and its bits."""

    code = "suite_exceeds_leakage_policy"


class BundleBadManifest(Unprocessable):
    """`suite.yaml` is not valid: `detail` names each problem (name, semver version, entrypoint,
    metric declarations by kind)."""

    code = "bundle_bad_manifest"


class RetirementUnconfirmed(Conflict):
    """Retiring this model or dataset version would leave released results that can no longer be re-run:
    `alternatives` lists those jobs and, last, the token to send as `confirm` to retire it anyway
    (valid while that list is the same)."""

    code = "retirement_unconfirmed"


class ModelNotRetired(Conflict):
    """Only a retired model version's weights may be purged: retire it first (which lists the released
    jobs that could no longer be re-run)."""

    code = "model_not_retired"


class ModelInUse(Conflict):
    """Jobs on this model version have not ended yet; its weights are purged once they have."""

    code = "model_in_use"


class InvalidLicense(Unprocessable):
    """License terms need a short text and an SPDX id or an http(s) URL; `detail` says what is wrong."""

    code = "invalid_license"
