class SandboxError(Exception):
    """A Docker operation failed. The message is for operators; partners see `internal_error`."""


class DockerUnavailable(SandboxError):
    pass


class ImageMissing(SandboxError):
    pass
