"""The gallery's own failures, one class per thing a caller answers differently.

They cross the Serve boundary as values (`GalleryFailure`), not as raised exceptions:
the serving adapter turns an exception in `predict` into a generic ModelError, and an
ingress must tell "no such person" (404) from "other recogniser weights" (409) from
"the store is down" (503 with Retry-After).
"""

from __future__ import annotations

from dataclasses import dataclass


class GalleryError(Exception):
    code = "gallery_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class PersonNotFound(GalleryError):
    code = "not_found"


class WeightsMismatch(GalleryError):
    """Embeddings from other recogniser weights than the gallery's: their similarities
    to the stored faces mean nothing, so they are neither stored nor searched."""

    code = "weights_mismatch"


class StoreUnavailable(GalleryError):
    """The store cannot be reached or is locked beyond its timeout: retry later."""

    code = "store_unavailable"


class InvalidRequest(GalleryError):
    """An item the gallery cannot take as it is (a bad cursor, a malformed embedding)."""

    code = "invalid_request"


ERRORS: dict[str, type[GalleryError]] = {
    cls.code: cls for cls in (PersonNotFound, WeightsMismatch, StoreUnavailable, InvalidRequest)
}


@dataclass(frozen=True)
class GalleryFailure:
    """One item's failure, as a result value."""

    code: str
    message: str

    @staticmethod
    def of(error: GalleryError) -> GalleryFailure:
        return GalleryFailure(error.code, error.message)

    def error(self) -> GalleryError:
        return ERRORS.get(self.code, GalleryError)(self.message)


def unwrap(result):
    """A gallery result, or its failure raised as the matching GalleryError subclass."""
    if isinstance(result, GalleryFailure):
        raise result.error()
    return result
