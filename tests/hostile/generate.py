"""Make hostile and odd audio files: real clips encoded by PyAV, then broken by byte surgery.

Nothing is downloaded. Each *class* is one kind of hostility (a tag flood, a zlib bomb, a box
tree full of ``free`` atoms, a truncated file, a FIFO ...); ``generate_all`` writes every class
into a folder and says, per file, what a correct outcome is::

    from tests.hostile.generate import generate_all
    cases = generate_all(Path("/tmp/hostile"), seed=0, fast=True)
    for case in cases:
        print(case.name, case.expect, case.path)

``expect`` is ``"refuse-precheck"`` (the pre-check must refuse it, before FFmpeg or mutagen),
``"ok"`` (an ordinary file in odd clothes: it must be tagged normally) or ``"any"`` (any clean
outcome: a result or an error message, but no crash, hang or runaway memory).

Big files are written sparse (their pictures and padding are holes of zeros), so even the
20 MB cases take little disk; the zlib bomb is ~1 MB although it inflates to 1 GiB.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

try:
    import audiogen  # tests/ is on sys.path under pytest
except ImportError:  # run as python -m tests.hostile.generate
    from tests import audiogen  # type: ignore[no-redef]

MiB = 1024 * 1024

# A file's content as pieces: bytes are written, an int is a run of that many zero bytes left
# as a hole, so a 20 MB picture of zeros costs no memory and almost no disk.
Parts = list[bytes | int]
# How a special file (FIFO, socket) is made at a path.
Maker = Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    """One generated file: where it is, its hostile class, and what a correct outcome is."""

    path: Path
    name: str
    expect: str  # "refuse-precheck" | "ok" | "any"


# --- real audio ----------------------------------------------------------------------------------


# The formats and encoders are the test suite's own (tests/audiogen.py).
ENCODINGS, LAYOUTS = audiogen.ENCODINGS, audiogen.LAYOUTS


def encode(fmt: str, seconds: float = 1.0, rate: int = 44100, channels: int = 2,
           codec: str | None = None) -> bytes:
    """A real encoded clip of a chord with a little noise, as the bytes of a ``fmt`` file."""
    enc = ENCODINGS[fmt]
    rate = enc.rate or rate
    n = max(1, round(seconds * rate))
    t = np.arange(n) / rate
    signal = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    signal = signal + np.random.default_rng(0).normal(0.0, 0.02, n)
    samples = np.ascontiguousarray(np.tile(signal, (channels, 1)), dtype=np.float32)
    out = io.BytesIO()
    with av.open(out, "w", format=enc.container) as container:
        stream = container.add_stream(codec or enc.codec, rate=rate)
        stream.layout = LAYOUTS[channels]
        if enc.options:
            stream.codec_context.options = dict(enc.options)
        for start in range(0, n, 4096):
            piece = np.ascontiguousarray(samples[:, start : start + 4096])
            frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=LAYOUTS[channels])
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


# --- ID3v2 and APEv2 -----------------------------------------------------------------------------


def syncsafe(n: int) -> bytes:
    """``n`` as a 4-byte ID3v2 syncsafe integer (7 bits a byte)."""
    return bytes((n >> shift) & 0x7F for shift in (21, 14, 7, 0))


def id3_frame_header(frame_id: bytes, size: int, version: int = 4, flags: int = 0) -> bytes:
    """A v2.3/v2.4 frame header for a body of ``size`` bytes."""
    size_bytes = syncsafe(size) if version == 4 else struct.pack(">I", size)
    return frame_id + size_bytes + struct.pack(">H", flags)


def id3_frame(frame_id: bytes, body: bytes, version: int = 4, flags: int = 0) -> bytes:
    """A whole v2.3/v2.4 frame."""
    return id3_frame_header(frame_id, len(body), version, flags) + body


def id3_tag(frames: Parts, version: int = 4, padding: int = 0, flags: int = 0) -> Parts:
    """An ID3v2 tag around ``frames``, with ``padding`` zero bytes (a hole), maybe a footer."""
    size = _length(frames) + padding
    header = b"ID3" + bytes((version, 0, flags)) + syncsafe(size)
    footer = [b"3DI" + header[3:]] if flags & 0x10 else []
    return [header, *frames, padding, *footer]


def strip_id3(data: bytes) -> bytes:
    """``data`` without the ID3v2 tag FFmpeg's mp3 muxer puts first."""
    if data[:3] != b"ID3":
        return data
    size = sum(b << shift for b, shift in zip(data[6:10], (21, 14, 7, 0)))
    return data[10 + size :]


def txxx_flood(count: int, version: int = 4) -> bytes:
    """``count`` small TXXX frames, as in the 100k-TXXX reproducer."""
    return b"".join(id3_frame(b"TXXX", b"\x00" + str(i).encode() + b"\x00vvvvvvvv", version)
                    for i in range(count))


def comm_flood(count: int, version: int = 4) -> bytes:
    """``count`` small COMM frames, each with its own description."""
    return b"".join(id3_frame(b"COMM", b"\x00eng" + str(i).encode() + b"\x00comment", version)
                    for i in range(count))


def apic_frame(picture: int, version: int = 4) -> Parts:
    """An APIC frame holding a JPEG-looking picture of ``picture`` bytes (mostly a hole)."""
    head = b"\x00image/jpeg\x00\x03cover\x00" + b"\xff\xd8\xff\xe0"
    body = len(head) + picture - 4
    return [id3_frame_header(b"APIC", body, version), head, picture - 4]


def zlib_zeros(inflated: int) -> bytes:
    """A zlib stream that inflates to ``inflated`` zero bytes, made without deflating them all.

    After a full flush the compressor forgets its history, so every further MiB of zeros
    compresses to the same bytes; the stream is that piece repeated, then an empty final block
    and the Adler-32 of all those zeros (a = 1, b = n mod 65521).
    """
    chunk = bytes(MiB)
    compressor = zlib.compressobj(9)
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeat = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    chunks = max(1, inflated // MiB)
    adler = ((chunks * MiB % 65521) << 16) | 1
    return first + repeat * (chunks - 1) + b"\x03\x00" + struct.pack(">I", adler)


def ape_tag(items: list[tuple[bytes, bytes]]) -> bytes:
    """An APEv2 tag (header, items, footer), as appended to mp3 files."""
    body = b"".join(struct.pack("<II", len(value), 0) + key + b"\x00" + value
                    for key, value in items)

    def frame(flags: int) -> bytes:
        fields = struct.pack("<IIII", 2000, len(body) + 32, len(items), flags)
        return b"APETAGEX" + fields + bytes(8)

    return frame(0xA0000000) + body + frame(0x80000000)


def mp3_with_tag(mp3: bytes, frames: Parts, version: int = 4, padding: int = 0) -> Parts:
    """An mp3 clip whose own tag is replaced by one holding ``frames``."""
    return [*id3_tag(frames, version, padding), strip_id3(mp3)]


# --- FLAC ----------------------------------------------------------------------------------------


def flac_split(flac: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """A FLAC file's metadata blocks (type, body) and its audio frames."""
    pos, blocks = 4, []
    while True:
        kind, length = flac[pos] & 0x7F, int.from_bytes(flac[pos + 1 : pos + 4])
        blocks.append((kind, flac[pos + 4 : pos + 4 + length]))
        pos += 4 + length
        if flac[pos - 4 - length] & 0x80:
            return blocks, flac[pos:]


def flac_join(blocks: list[tuple[int, Parts]], audio: bytes) -> Parts:
    """A FLAC file from metadata blocks (type, body parts) and audio frames; marks the last."""
    parts: Parts = [b"fLaC"]
    for i, (kind, body) in enumerate(blocks):
        last = 0x80 if i == len(blocks) - 1 else 0
        parts += [bytes((last | kind,)) + _length(body).to_bytes(3), *body]
    return [*parts, audio]


def flac_with(flac: bytes, extra: list[tuple[int, Parts]]) -> Parts:
    """``flac`` with metadata blocks added after STREAMINFO (and its own blocks kept)."""
    blocks, audio = flac_split(flac)
    return flac_join([(blocks[0][0], [blocks[0][1]]), *extra,
                      *((k, [b]) for k, b in blocks[1:])], audio)


def vorbis_comments(comments: list[bytes], vendor: bytes = b"hostile") -> bytes:
    """A Vorbis comment list: vendor, count, length-prefixed comments (no framing bit)."""
    body = b"".join(struct.pack("<I", len(c)) + c for c in comments)
    return struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", len(comments)) + body


def flac_picture(picture: int) -> Parts:
    """A FLAC PICTURE block body holding a JPEG-looking picture of ``picture`` bytes."""
    mime, desc = b"image/jpeg", b"cover"
    head = struct.pack(">II", 3, len(mime)) + mime + struct.pack(">I", len(desc)) + desc
    head += struct.pack(">IIIII", 1000, 1000, 24, 0, picture)
    return [head, b"\xff\xd8\xff\xe0", picture - 4]


# --- MP4 -----------------------------------------------------------------------------------------


def box(kind: bytes, *body: bytes | int) -> Parts:
    """An MP4 box around ``body``."""
    return [struct.pack(">I", 8 + _length(list(body))) + kind, *body]


def ilst_item(kind: bytes, value: bytes | int, data_type: int = 1) -> Parts:
    """An ilst item (text by default, 13 for JPEG) holding one data box."""
    head = struct.pack(">II", data_type, 0)
    data = box(b"data", head, b"\xff\xd8\xff\xe0", value - 4) if isinstance(value, int) \
        else box(b"data", head, value)
    return box(kind, *data)


def mp4_top_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """Top-level boxes of an MP4 file as (type, start, end)."""
    pos, out = 0, []
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        out.append((kind, pos, pos + size))
        pos += size
    return out


def mp4_insert_after_ftyp(m4a: bytes, inserted: bytes) -> bytes:
    """``m4a`` with ``inserted`` right after ftyp; the chunk offsets (stco) move with mdat."""
    ftyp_end = mp4_top_boxes(m4a)[0][2]
    out = bytearray(m4a[:ftyp_end] + inserted + m4a[ftyp_end:])
    at = out.find(b"stco", mp4_top_boxes(m4a)[-1][1] + len(inserted))
    count = struct.unpack(">I", out[at + 8 : at + 12])[0]
    for entry in range(at + 12, at + 12 + 4 * count, 4):
        offset = struct.unpack(">I", out[entry : entry + 4])[0]
        out[entry : entry + 4] = struct.pack(">I", offset + len(inserted))
    return bytes(out)


def mp4_with_udta(m4a: bytes, ilst: Parts, extra: Parts = ()) -> Parts:
    """``m4a`` whose moov (last in the file, so no offsets move) gets a new udta/meta/ilst."""
    kind, start, end = mp4_top_boxes(m4a)[-1]
    assert kind == b"moov", "the ipod muxer writes moov last"
    children, pos = [], start + 8
    while pos < end:
        size, child = struct.unpack(">I4s", m4a[pos : pos + 8])
        if child != b"udta":
            children.append(m4a[pos : pos + size])
        pos += size
    hdlr = box(b"hdlr", bytes(8) + b"mdirappl" + bytes(9))
    meta = box(b"meta", bytes(4), *hdlr, *box(b"ilst", *ilst))
    return [m4a[:start], *box(b"moov", *children, *box(b"udta", *meta), *extra)]


# --- RIFF/WAV and AIFF ---------------------------------------------------------------------------


def chunk(kind: bytes, body: Parts, order: str = "<") -> Parts:
    """A RIFF (little-endian) or AIFF (big-endian) chunk, padded to an even length."""
    size = _length(body)
    return [kind + struct.pack(order + "I", size), *body, b"\x00" * (size & 1)]


def with_chunk(form: bytes, extra: Parts, before_audio: bool = False,
               size_override: int | None = None) -> Parts:
    """A WAV or AIFF file with one more chunk, at the end or before the audio chunk."""
    order = "<" if form[:4] == b"RIFF" else ">"
    audio = b"data" if order == "<" else b"SSND"
    pos = 12
    while form[pos : pos + 4] != audio:
        pos += 8 + struct.unpack(order + "I", form[pos + 4 : pos + 8])[0]
    body = [form[12:pos], *extra, form[pos:]] if before_audio else [form[12:], *extra]
    size = size_override if size_override is not None else 4 + _length(body)
    return [form[:4] + struct.pack(order + "I", size & 0xFFFFFFFF) + form[8:12], *body]


# --- Ogg -----------------------------------------------------------------------------------------

_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, not reflected, no init or final xor) via zlib.

    zlib's CRC-32 is the reflected form of the same polynomial: reverse every byte, start the
    register at zero, undo its final xor and reverse the result.
    """
    value = zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{value:032b}"[::-1], 2)


def ogg_page(body: bytes, lacing: list[int], flags: int, granule: int, serial: int,
             sequence: int) -> bytes:
    """One Ogg page with its CRC."""
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, serial, sequence, 0, len(lacing))
    page = header + bytes(lacing) + body
    return page[:22] + struct.pack("<I", ogg_crc(page)) + page[26:]


def ogg_pages(data: bytes) -> list[tuple[int, int, int, list[int], bytes]]:
    """An Ogg file's pages as (flags, granule, serial, lacing, body)."""
    pos, pages = 0, []
    while pos + 27 <= len(data):
        header = struct.unpack("<4sBBqIIIB", data[pos : pos + 27])
        _, _, flags, granule, serial, _, _, count = header
        lacing = list(data[pos + 27 : pos + 27 + count])
        body = data[pos + 27 + count : pos + 27 + count + sum(lacing)]
        pages.append((flags, granule, serial, lacing, body))
        pos += 27 + count + sum(lacing)
    return pages


def ogg_with_comments(ogg: bytes, comments: bytes) -> bytes:
    """A Vorbis or Opus file whose comment header packet is replaced by ``comments``."""
    pages = ogg_pages(ogg)
    serial = pages[0][2]
    headers = 3 if pages[0][4].startswith(b"\x01vorbis") else 2  # Vorbis has a setup header
    packets, current, first_audio = [], b"", 0
    for index, (_, _, _, lacing, body) in enumerate(pages):
        pos = 0
        for lace in lacing:
            current += body[pos : pos + lace]
            pos += lace
            if lace < 255:
                packets.append(current)
                current = b""
        if len(packets) >= headers:
            first_audio = index + 1
            break
    packets = [packets[0], comments, *packets[2:headers]]
    out = [ogg_page(packets[0], _lacing(packets[0]), 0x02, 0, serial, 0)]
    lacing = [(lace, i) for i, p in enumerate(packets[1:]) for lace in _lacing(p)]
    body = b"".join(packets[1:])
    pos, continued = 0, False
    while lacing:
        page_lacing, lacing = lacing[:255], lacing[255:]
        size = sum(lace for lace, _ in page_lacing)
        ends = any(lace < 255 for lace, _ in page_lacing)
        out.append(ogg_page(body[pos : pos + size], [lace for lace, _ in page_lacing],
                            0x01 if continued else 0, 0 if ends else -1, serial, len(out)))
        pos += size
        continued = page_lacing[-1][0] == 255
    for flags, granule, page_serial, page_lacing, page_body in pages[first_audio:]:
        out.append(ogg_page(page_body, page_lacing, flags, granule, page_serial, len(out)))
    return b"".join(out)


def _lacing(packet: bytes) -> list[int]:
    """Ogg lacing values for one packet: 255s, then the remainder (0 if it divides evenly)."""
    return [255] * (len(packet) // 255) + [len(packet) % 255]


def ogg_comment_packet(fmt: str, comments: list[bytes]) -> bytes:
    """A Vorbis (with its framing bit) or Opus comment header packet."""
    if fmt == "opus":
        return b"OpusTags" + vorbis_comments(comments)
    return b"\x03vorbis" + vorbis_comments(comments) + b"\x01"


# --- the classes ---------------------------------------------------------------------------------


class _Context:
    """What every class builder needs: randomness, how many variants, and encoded clips."""

    def __init__(self, seed: int, variants: int, fast: bool) -> None:
        self.rng = np.random.default_rng(seed)
        self.variants = variants
        self.fast = fast
        self.flood = 20_000 if fast else 100_000  # either is well past max_frames = 10,000
        self._clips: dict[tuple[str, float, int, int, str | None], bytes] = {}

    def clip(self, fmt: str, seconds: float = 1.0, rate: int = 44100, channels: int = 2,
             codec: str | None = None) -> bytes:
        """An encoded clip, made once per set of arguments."""
        key = (fmt, seconds, rate, channels, codec)
        if key not in self._clips:
            self._clips[key] = encode(fmt, seconds, rate, channels, codec)
        return self._clips[key]


Output = Iterator[tuple[str, Parts | Maker]]


@dataclass(frozen=True)
class HostileClass:
    """One kind of hostile file: its name, the correct outcome, and how its files are made."""

    name: str
    expect: str
    make: Callable[[_Context], Output]


def _zero_byte(ctx: _Context) -> Output:
    """Empty files under every audio extension."""
    for ext in ENCODINGS:
        yield f"empty.{ext}", []


def _truncated(ctx: _Context) -> Output:
    """Real files cut at random offsets (anywhere from inside the header to near the end)."""
    for fmt in ENCODINGS:
        data = ctx.clip(fmt)
        for i in range(ctx.variants):
            yield f"cut{i}.{fmt}", [data[: int(ctx.rng.integers(1, len(data)))]]


def _random_bytes(ctx: _Context) -> Output:
    """Random bytes under audio extensions, some behind a real format's magic."""
    magics = {"mp3": b"ID3\x04\x00\x00", "flac": b"fLaC", "m4a": b"\x00\x00\x00\x1cftyp",
              "ogg": b"OggS\x00\x02", "opus": b"OggS\x00\x02", "wav": b"RIFF\xff\xff\x00\x00WAVE",
              "aiff": b"FORM\x00\x01\x00\x00AIFF"}
    for ext, magic in magics.items():
        for i in range(ctx.variants):
            noise = ctx.rng.bytes(int(ctx.rng.integers(1, 64 * 1024)))
            yield f"noise{i}.{ext}", [noise]
            yield f"magic-noise{i}.{ext}", [magic + noise]


def _wrong_extension(ctx: _Context) -> Output:
    """Real files under another format's extension."""
    for fmt, ext in (("mp3", "flac"), ("flac", "mp3"), ("m4a", "ogg"), ("wav", "m4a"),
                     ("ogg", "opus"), ("aiff", "wav")):
        yield f"{fmt}-named.{ext}", [ctx.clip(fmt)]


def _flipped(ctx: _Context, region: str) -> Output:
    """Real files with a few random bits flipped, in the first 512 bytes or in the middle."""
    for fmt in ENCODINGS:
        data = ctx.clip(fmt)
        for i in range(ctx.variants):
            flipped = bytearray(data)
            low, high = (0, min(512, len(data))) if region == "header" \
                else (len(data) // 3, 2 * len(data) // 3)
            for at in ctx.rng.integers(low, high, size=int(ctx.rng.integers(1, 9))):
                flipped[at] ^= 1 << int(ctx.rng.integers(0, 8))
            yield f"flip{i}.{fmt}", [bytes(flipped)]


def _pictures(ctx: _Context, size: int) -> Output:
    """A cover of ``size`` bytes in ID3 (APIC), FLAC (PICTURE, capped at 16 MB) and MP4 (covr)."""
    yield "cover.mp3", mp3_with_tag(ctx.clip("mp3"), apic_frame(size))
    yield "cover.flac", flac_with(ctx.clip("flac"), [(6, flac_picture(min(size, 12 * MiB)))])
    yield "cover.m4a", mp4_with_udta(ctx.clip("m4a"), ilst_item(b"covr", size, data_type=13))


def _padding(ctx: _Context, size: int) -> Output:
    """``size`` bytes of padding in an ID3 tag and in FLAC (PADDING blocks of < 16 MB each)."""
    yield "padded.mp3", mp3_with_tag(ctx.clip("mp3"), [id3_frame(b"TIT2", b"\x03padded")],
                                     padding=size)
    blocks = [(1, [min(size - done, 9 * MiB)]) for done in range(0, size, 9 * MiB)]
    yield "padded.flac", flac_with(ctx.clip("flac"), blocks)


def _id3_floods(ctx: _Context) -> Output:
    """Tags of ctx.flood frames: TXXX (v2.3 and v2.4), COMM, a v2.4 tag appended at the end."""
    mp3 = strip_id3(ctx.clip("mp3"))
    yield "txxx-v23.mp3", mp3_with_tag(mp3, [txxx_flood(ctx.flood, 3)], version=3)
    yield "txxx-v24.mp3", mp3_with_tag(mp3, [txxx_flood(ctx.flood)])
    yield "comm.mp3", mp3_with_tag(mp3, [comm_flood(ctx.flood)])
    yield "appended-v24.mp3", [mp3, *id3_tag([txxx_flood(ctx.flood)], flags=0x10)]


def _comment_floods(ctx: _Context) -> Output:
    """ctx.flood Vorbis comments in FLAC (also behind an ID3v2 tag), Ogg Vorbis and Opus."""
    comments = [b"COMMENT=%d" % i for i in range(ctx.flood)]
    block = [(4, [vorbis_comments(comments)])]
    yield "comments.flac", flac_with(ctx.clip("flac"), block)
    yield "id3-then-comments.flac", [*id3_tag([id3_frame(b"TIT2", b"\x03x")]),
                                     *flac_with(ctx.clip("flac"), block)]
    for fmt in ("ogg", "opus"):
        packet = ogg_comment_packet(fmt, comments)
        yield f"comments.{fmt}", [ogg_with_comments(ctx.clip(fmt), packet)]


def _item_floods(ctx: _Context) -> Output:
    """ctx.flood APEv2 items after an mp3, and ctx.flood ilst items in an m4a."""
    items = [(b"Key%d" % i, b"value") for i in range(ctx.flood)]
    yield "ape-items.mp3", [ctx.clip("mp3"), ape_tag(items)]
    ilst = [part for i in range(ctx.flood) for part in ilst_item(b"\xa9cmt", b"c%d" % i)]
    yield "ilst-items.m4a", mp4_with_udta(ctx.clip("m4a"), ilst)


def _chunk_floods(ctx: _Context) -> Output:
    """An ID3 chunk with ctx.flood frames in WAV and AIFF; a WAV with 20,000 tiny chunks."""
    tag = id3_tag([txxx_flood(ctx.flood)])
    yield "id3-chunk.wav", with_chunk(ctx.clip("wav"), chunk(b"id3 ", tag))
    yield "id3-chunk.aiff", with_chunk(ctx.clip("aiff"), chunk(b"ID3 ", tag, ">"))
    tiny = [part for i in range(20_000) for part in chunk(b"junk", [b"%04d" % (i % 10_000)])]
    yield "many-chunks.wav", with_chunk(ctx.clip("wav"), tiny)


def _many_floods(ctx: _Context) -> Output:
    """Floods each under the limit but many of them: 6 Vorbis comment blocks or 6 ID3 chunks
    of 9,000 entries."""
    comments = [b"C=%d" % (i % 10) for i in range(9_000)]
    blocks = [(4, [vorbis_comments(comments)]) for _ in range(6)]
    yield "comment-blocks.flac", flac_with(ctx.clip("flac"), blocks)
    frames = b"".join(id3_frame(b"TXXX", b"\x00\x00") for _ in range(9_000))
    tags = [part for _ in range(6) for part in chunk(b"id3 ", id3_tag([frames]))]
    yield "id3-chunks.wav", with_chunk(ctx.clip("wav"), tags)


def _zlib_bombs(ctx: _Context) -> Output:
    """ID3 frames of compressed zeros that inflate to 1 GiB: honest, lying and v2.3 sizes."""
    bomb = zlib_zeros(1024 * MiB)
    mp3 = ctx.clip("mp3")
    # All zeros inflate to a valid TXXX: Latin-1, an empty description, a 1 GiB value.
    # v2.4: compressed (0x08) with a data length indicator (0x01); 0x0FFFFFFF is the largest
    # a syncsafe indicator can say. The lying one says 1,000 bytes: mutagen ignores it.
    honest = syncsafe(0x0FFFFFFF) + bomb
    lying = syncsafe(1000) + bomb
    yield "v24-declared.mp3", mp3_with_tag(mp3, [id3_frame(b"TXXX", honest, 4, 0x0009)])
    yield "v24-lying.mp3", mp3_with_tag(mp3, [id3_frame(b"TXXX", lying, 4, 0x0009)])
    # v2.3: compressed (0x0080), a plain 4-byte decompressed size first.
    v23 = struct.pack(">I", 1024 * MiB) + bomb
    yield "v23-declared.mp3", mp3_with_tag(mp3, [id3_frame(b"TXXX", v23, 3, 0x0080)], version=3)


def _mp4_boxes(ctx: _Context) -> Output:
    """Box-tree abuse: 1,000 free atoms, a 4 GB claim, nesting 100 deep, a size under 8."""
    m4a = ctx.clip("m4a")
    yield "free-1000.m4a", [mp4_insert_after_ftyp(m4a, b"\x00\x00\x00\x08free" * 1000)]
    _, start, _ = mp4_top_boxes(m4a)[-1]
    yield "moov-4GB.m4a", [m4a[:start], struct.pack(">I", 0xFFFFFFF0), m4a[start + 4 :]]
    nested: Parts = box(b"udta", *box(b"\xa9cmt", b"deep"))
    for _ in range(100):
        nested = box(b"udta", *nested)
    yield "nested-100.m4a", mp4_with_udta(m4a, ilst_item(b"\xa9nam", b"deep"), extra=nested)
    yield "tiny-box.m4a", [mp4_insert_after_ftyp(m4a, b"\x00\x00\x00\x03free")]


def _chunk_sizes(ctx: _Context) -> Output:
    """A LIST chunk before the audio claiming ~4 GB, in WAV and AIFF."""
    lie = [b"LIST" + struct.pack("<I", 0xFFFFFF00), b"INFOISFT\x04\x00\x00\x00lie\x00"]
    yield "list-4GB.wav", with_chunk(ctx.clip("wav"), lie, before_audio=True)
    lie = [b"APPL" + struct.pack(">I", 0xFFFFFF00), b"lie!"]
    yield "appl-4GB.aiff", with_chunk(ctx.clip("aiff"), lie, before_audio=True)


def _claims_hours(ctx: _Context) -> Output:
    """Headers claiming 10 hours over 1 s of audio: WAV and AIFF sizes, an mp3 Xing frame count."""
    wav = bytearray(ctx.clip("wav", channels=1))
    at = wav.index(b"data")
    wav[at + 4 : at + 8] = struct.pack("<I", 10 * 3600 * 44100 * 2)
    yield "ten-hours.wav", [bytes(wav)]
    aiff = bytearray(ctx.clip("aiff", channels=1))
    frames = 10 * 3600 * 44100
    at = aiff.index(b"COMM")
    aiff[at + 10 : at + 14] = struct.pack(">I", frames)
    at = aiff.index(b"SSND")
    aiff[at + 4 : at + 8] = struct.pack(">I", frames * 2 + 8)
    yield "ten-hours.aiff", [bytes(aiff)]
    mp3 = bytearray(ctx.clip("mp3"))
    at = next(mp3.find(tag) for tag in (b"Xing", b"Info") if mp3.find(tag) >= 0)
    mp3[at + 4 : at + 8] = struct.pack(">I", struct.unpack(">I", mp3[at + 4 : at + 8])[0] | 1)
    mp3[at + 8 : at + 12] = struct.pack(">I", 10 * 3600 * 44100 // 1152)
    yield "ten-hours.mp3", [bytes(mp3)]


def _odd_audio(ctx: _Context) -> Output:
    """Legal but unusual audio: one sample, 8-bit, 96 kHz, 5.1."""
    for fmt in ("wav", "flac", "mp3"):
        yield f"one-sample.{fmt}", [ctx.clip(fmt, seconds=1 / 44100)]
    yield "8bit.wav", [ctx.clip("wav", codec="pcm_u8")]
    yield "96k.flac", [ctx.clip("flac", rate=96000)]
    yield "96k.wav", [ctx.clip("wav", rate=96000)]
    for fmt in ("flac", "m4a", "wav"):
        yield f"5.1.{fmt}", [ctx.clip(fmt, channels=6)]


def _odd_names(ctx: _Context) -> Output:
    """Ordinary files whose names have a newline, non-UTF-8 bytes, 250 bytes or a leading dash."""
    mp3 = ctx.clip("mp3")
    yield "new\nline.mp3", [mp3]
    yield os.fsdecode(b"caf\xe9-\xff\xfe.mp3"), [mp3]
    yield "x" * 246 + ".mp3", [mp3]
    yield "-rf.mp3", [mp3]
    yield "--help.flac", [ctx.clip("flac")]


def _special_files(ctx: _Context) -> Output:
    """A FIFO and a UNIX socket under audio names (opening a FIFO for reading blocks)."""
    yield "fifo.mp3", lambda path: os.mkfifo(path)
    yield "socket.flac", _make_socket


def _unreadable(ctx: _Context) -> Output:
    """A real file with mode 000 (root can still read it)."""
    def make(path: Path) -> None:
        path.write_bytes(ctx.clip("mp3"))
        path.chmod(0)

    yield "mode000.mp3", make


def _make_socket(path: Path) -> None:
    """A UNIX socket file at ``path``, bound at a short temporary path and moved (paths > 107
    bytes cannot be bound)."""
    with tempfile.TemporaryDirectory() as short, socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.path.join(short, "s"))
        os.rename(os.path.join(short, "s"), path)


CLASSES: tuple[HostileClass, ...] = (
    HostileClass("zero-byte", "any", _zero_byte),
    HostileClass("truncated", "any", _truncated),
    HostileClass("random-bytes", "any", _random_bytes),
    HostileClass("wrong-extension", "ok", _wrong_extension),
    HostileClass("bitflip-header", "any", lambda ctx: _flipped(ctx, "header")),
    HostileClass("bitflip-payload", "any", lambda ctx: _flipped(ctx, "payload")),
    HostileClass("picture-2MB", "ok", lambda ctx: _pictures(ctx, 2 * MiB)),
    HostileClass("picture-20MB", "refuse-precheck", lambda ctx: _pictures(ctx, 20 * MiB)),
    HostileClass("padding-1MB", "ok", lambda ctx: _padding(ctx, MiB)),
    HostileClass("padding-20MB", "refuse-precheck", lambda ctx: _padding(ctx, 20 * MiB)),
    HostileClass("id3-frame-flood", "refuse-precheck", _id3_floods),
    HostileClass("vorbis-comment-flood", "refuse-precheck", _comment_floods),
    HostileClass("item-flood", "refuse-precheck", _item_floods),
    HostileClass("chunk-flood", "refuse-precheck", _chunk_floods),
    HostileClass("many-floods", "refuse-precheck", _many_floods),
    HostileClass("zlib-bomb", "refuse-precheck", _zlib_bombs),
    HostileClass("mp4-box-abuse", "refuse-precheck", _mp4_boxes),
    HostileClass("chunk-size-lie", "refuse-precheck", _chunk_sizes),
    HostileClass("claims-hours", "any", _claims_hours),
    HostileClass("odd-audio", "ok", _odd_audio),
    HostileClass("odd-names", "ok", _odd_names),
    HostileClass("special-file", "any", _special_files),
    HostileClass("unreadable", "any", _unreadable),
)


def generate_all(folder: Path, seed: int = 0, count: int | None = None,
                 fast: bool = False) -> list[Case]:
    """Write every hostile class into ``folder`` (one subfolder each) and describe the files.

    ``count`` is how many random variants a randomised class makes (truncations, bit flips,
    noise); by default 3, or 1 with ``fast``. ``fast`` also floods with 20,000 rather than
    100,000 frames, keeping the whole set under 40 MB on disk.
    """
    ctx = _Context(seed, count if count is not None else (1 if fast else 3), fast)
    cases = []
    for hostile in CLASSES:
        sub = folder / hostile.name
        sub.mkdir(parents=True, exist_ok=True)
        for name, content in hostile.make(ctx):
            path = sub / name
            if callable(content):
                content(path)
            else:
                write_parts(path, content)
            cases.append(Case(path, hostile.name, hostile.expect))
    return cases


def write_parts(path: Path, parts: Parts) -> Path:
    """Write ``parts`` to ``path``, leaving the zero runs as holes (a sparse file)."""
    with open(path, "wb") as out:
        for part in parts:
            if isinstance(part, int):
                out.seek(part, os.SEEK_CUR)
            else:
                out.write(part)
        out.truncate()
    return path


def _length(parts: Parts) -> int:
    """How many bytes ``parts`` stand for."""
    return sum(part if isinstance(part, int) else len(part) for part in parts)


def main() -> None:
    """``python -m tests.hostile.generate FOLDER [--seed N] [--count N] [--fast]``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--fast", action="store_true")
    args = parser.parse_args()
    cases = generate_all(args.folder, args.seed, args.count, args.fast)
    for expect in ("refuse-precheck", "ok", "any"):
        print(f"{expect:16} {sum(c.expect == expect for c in cases):4} files")


if __name__ == "__main__":
    main()
