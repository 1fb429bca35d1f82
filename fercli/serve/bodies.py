"""Request bodies: read under a size limit, and multipart uploads parsed in memory (nothing touches disk)."""

from __future__ import annotations

from typing import Any

from fercli.serve.problems import HTTPProblem


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (Content-Length first)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise HTTPProblem(413, "upload_too_large", f"the body is {int(declared):,} bytes; the limit is {limit:,}")
        except ValueError:
            raise HTTPProblem(400, "bad_request", "Content-Length is not a number") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblem(413, "upload_too_large", f"the body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def multipart_files(body: bytes, content_type: str, max_files: int, too_many: HTTPProblem | None = None) -> list[bytes]:
    """The file parts of a multipart/form-data body, in order, parsed in memory.

    A part counts as a file when it has a filename or a non-text content type; its filename is
    never used. Plain form fields are skipped (not counted, not kept). More than ``max_files`` files
    raise ``too_many`` (default: a 413 naming the limit) as soon as the extra file's headers are read."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPProblem(400, "bad_request", "multipart/form-data without a boundary")
    files: list[list[bytes]] = []
    part: dict[bytes, bytes] = {}  # the current part's headers
    header = [b"", b""]
    keep = [False]  # whether the current part is a file (its data is kept)

    def on_part_begin() -> None:
        part.clear()
        header[:] = [b"", b""]
        keep[0] = False

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        part[header[0].strip().lower()] = header[1].strip()
        header[:] = [b"", b""]

    def on_headers_finished() -> None:
        _, disp = parse_options_header(part.get(b"content-disposition", b""))
        ctype = part.get(b"content-type", b"text/plain").split(b";")[0].strip().lower()
        keep[0] = b"filename" in disp or not ctype.startswith(b"text/")
        if keep[0]:
            if len(files) >= max_files:
                raise too_many or HTTPProblem(413, "too_many_images", f"more than {max_files} images in one request "
                                              "(the server's --max-images); split them over several requests")
            files.append([])

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if keep[0]:
            files[-1].append(data[start:end])

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_header_end": on_header_end,
                                        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data})
    try:
        parser.write(body)
        parser.finalize()
    except HTTPProblem:
        raise
    except Exception as exc:
        raise HTTPProblem(400, "bad_request", f"malformed multipart body ({type(exc).__name__})") from None
    return [b"".join(chunks) for chunks in files]
