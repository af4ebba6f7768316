"""A local PACS for tests and people: Orthanc with DICOMweb (orthanc), a synthetic CT
series (phantom) and pydicom's sample files loaded into it (samples); `python -m serve
pacs` runs it (cli). Its errors are clients.errors.PacsError, as a client's are."""
