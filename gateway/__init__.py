"""The REST API, the answer service, async jobs and warming: the top of the request path."""
