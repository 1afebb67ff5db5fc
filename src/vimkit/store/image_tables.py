"""The software image registry (``/admin/v1/images``): what a ``vcImageId`` names."""

from __future__ import annotations

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from vimkit.store.models import Base, DocumentMixin


class ImageRow(DocumentMixin, Base):
    """A registered image (a kernel+initramfs pair or a disk image); ``body`` is its representation.

    ``is_shared`` (the API's ``isPublic``) makes the image usable by every resource group: the
    repository's visibility honours an ``is_shared`` column, as for networks.
    """

    __tablename__ = "images"

    name: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    is_shared: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, index=True)
