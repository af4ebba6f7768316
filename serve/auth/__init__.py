"""Service keys, their rate limits and the audit trail: the logic every edge shares (the
request guard of one server today), pure where it can be, with thin file shells."""
