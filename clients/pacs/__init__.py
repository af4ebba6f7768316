"""A local PACS for tests and people: Orthanc with DICOMweb (orthanc), a synthetic CT
series (phantom) and pydicom's sample files loaded into it (samples); `python -m clients
pacs` runs it (cli)."""


class PacsError(RuntimeError):
    """The PACS cannot be started or reached; the message is one line naming the problem."""
