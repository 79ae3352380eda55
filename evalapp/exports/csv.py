"""CSV text from rows: formula neutralising and streaming a batch at a time. No models here, rows in, text out."""

import csv
import io
from collections.abc import Iterable, Iterator, Sequence

from django.http import StreamingHttpResponse

# OWASP ASVS 1.2.10 / CSV injection: a spreadsheet runs cells that begin with these.
DANGEROUS_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_DANGEROUS_FIRST = frozenset(DANGEROUS_PREFIXES)


def neutralise(value):
    """Prefix a text cell a spreadsheet would treat as a formula with a single quote; numbers pass."""
    if isinstance(value, str) and value.startswith(DANGEROUS_PREFIXES):
        return "'" + value
    return value


def csv_lines(header: Sequence[str], rows: Iterable[Sequence], batch: int = 1000) -> Iterator[str]:
    """Yield CSV text a batch of rows at a time: a million-row export never sits in memory, and
    writing batches keeps the per-row Python overhead low."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    # Python's csv quotes a field holding a line break only if the break is in lineterminator, so with
    # "\n" a bare CR went out unquoted and split the row for every reader; a row with a CR in a cell
    # goes through a writer that quotes it (as PostgreSQL's COPY does), and its "\r\n" end becomes "\n".
    cr_writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    pending = []
    for row in rows:
        # neutralise() inlined: this line runs once per cell of a million-row export.
        cells = ["" if v is None else ("'" + v if v.__class__ is str and v[:1] in _DANGEROUS_FIRST else v)
                 for v in row]
        if any(v.__class__ is str and "\r" in v for v in cells):
            writer.writerows(pending)
            pending.clear()
            cr_writer.writerow(cells)
            buffer.seek(buffer.tell() - 2)
            buffer.truncate()
            buffer.write("\n")
        else:
            pending.append(cells)
        if len(pending) >= batch:
            writer.writerows(pending)
            pending.clear()
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    writer.writerows(pending)
    yield buffer.getvalue()


def csv_response(header: Sequence[str], rows: Iterable[Sequence], filename: str) -> StreamingHttpResponse:
    """A streamed CSV download, the same for the pages and the API."""
    return stream_response(csv_lines(header, rows), filename)


def stream_response(chunks: Iterable[str | bytes], filename: str) -> StreamingHttpResponse:
    """A streamed CSV download of text already written (csv_lines, or PostgreSQL's COPY)."""
    response = StreamingHttpResponse(chunks, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
