"""Who is on the other end: channel addresses resolved to one canonical subject per person."""

from voxline.identity.base import SubjectResolver
from voxline.identity.phone import PhoneSubjectResolver, normalize_phone

__all__ = ["PhoneSubjectResolver", "SubjectResolver", "normalize_phone"]
