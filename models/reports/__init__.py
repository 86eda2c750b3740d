"""What a reviewer reads: the PDF builder, plots, and the signed privacy certificate.

The public API below is imported from its module on first use (`models.lazy_api`).
"""

from models import lazy_api

_API = {
    "PdfReport": "pdf",
    "issue_certificate": "certificate",
    "verify_certificate": "certificate",
    "read_certificate": "certificate",
    "render_certificate_pdf": "certificate",
}
__all__ = sorted(_API)
__getattr__ = lazy_api(__name__, _API)
