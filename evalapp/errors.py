"""The one error a service raises when a request cannot be carried out as asked.

It carries the HTTP status the web and the API answer with, so a view never has to know
which service raised it. Plain Python: library code below Django may subclass nothing here.
"""


class ServiceError(Exception):
    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self)
