"""Refuse files whose tags or containers would make FFmpeg or mutagen balloon or hang.

The check runs before any decoder or tag library sees a file and parses only headers: it reads
a bounded number of bytes (seeking over frame and box bodies), never decompresses anything, and
stops counting once a limit is passed, so a hostile file costs it milliseconds. It refuses only
what would blow up resources; a file that is merely truncated or garbled passes, and the decoder
then reports its own error.
"""

from __future__ import annotations

import io
import struct
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import accumulate
from typing import BinaryIO

MiB = 1024 * 1024

# Deflate cannot expand data by more than about 1032:1, so a compressed payload's size bounds
# what it can inflate to, whatever size it declares (mutagen ignores the declared size).
DEFLATE_MAX_RATIO = 1032


@dataclass(frozen=True)
class TagLimits:
    """How much tag and container structure a file may declare before it is refused."""

    max_tag_bytes: int = 16 * MiB
    """One tag: ID3v2, APEv2, all FLAC metadata blocks, an Ogg comment header, MP4 udta/meta/ilst.
    A real tag with a 3 MB cover and 1 MB of padding is ~4 MB; FLAC caps one block at 16 MB."""

    max_picture_bytes: int = 10 * MiB
    """One embedded picture (APIC, FLAC PICTURE, covr). Cover art is 50 KB to 3 MB; 10 MB still
    takes a print-resolution scan."""

    max_frames: int = 10_000
    """ID3v2 frames, Vorbis comments, APEv2 items or MP4 ilst items. Real files have < 100."""

    max_atoms: int = 10_000
    """MP4 boxes, RIFF/AIFF chunks or FLAC metadata blocks walked in all. A real m4a has ~40
    boxes, a few hundred with chapters; a WAV or FLAC file has fewer than 20."""

    max_free_atoms: int = 100
    """MP4 free/skip/wide boxes. Muxers write one or two; a flood of them crashes decoding."""

    max_depth: int = 32
    """MP4 box nesting. Real files nest 7 or 8 deep (moov/udta/meta/ilst/item/data)."""

    max_box_bytes: int = 64 * MiB
    """One MP4 box or RIFF/AIFF chunk other than the audio data itself (mdat, data, SSND) or
    filler. A 10-hour m4a's moov is ~6 MB; a larger claim makes readers allocate it."""

    max_inflated_bytes: int = 16 * MiB
    """What one compressed ID3v2 frame may inflate to, declared or possible from its compressed
    size. ID3 compression is almost never used; the largest honest frame is a picture."""


class _Truncated(Exception):
    """A header ends early: the file is truncated or garbage, which is the decoder's business."""


class _OverBudget(Exception):
    """More headers were walked in all than any real file has: the file is refused."""


class _Budget:
    """How many more headers (frames, comments, boxes, chunks, blocks, pages) may be walked.

    Each format stops at its own limit; this caps the sum, so that many moderate floods in one
    file (a WAV with a thousand ID3 chunks, FLAC with many comment blocks) stay cheap too.
    """

    def __init__(self, limits: TagLimits) -> None:
        self.total = limits.max_frames + limits.max_atoms
        self.left = self.total

    def spend(self) -> None:
        """Walk one more header.

        Raises:
            _OverBudget: the budget is spent.
        """
        self.left -= 1
        if self.left < 0:
            raise _OverBudget


class _Bytes:
    """Random access to a file through one cached window: every read is bounded."""

    # Small, so that walking 10,000 headers far apart reads at most ~80 MB; no header is longer.
    WINDOW = 8 * 1024

    def __init__(self, fileobj: BinaryIO, size: int, budget: _Budget) -> None:
        self.fileobj = fileobj
        self.size = size
        self.budget = budget
        self._start = 0
        self._window = b""

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` (at most a window) bytes at ``offset``; fewer at the end of the file."""
        length = min(length, self.WINDOW, self.size - offset)
        if offset < 0 or length <= 0:
            return b""
        start = offset - self._start
        if start < 0 or start + length > len(self._window):
            self.fileobj.seek(offset)
            self._window = self.fileobj.read(self.WINDOW)
            self._start, start = offset, 0
        return self._window[start : start + length]

    def exact(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``.

        Raises:
            _Truncated: the file ends first.
        """
        raw = self.read(offset, length)
        if len(raw) != length:
            raise _Truncated
        return raw

    def whole(self, offset: int, length: int) -> bytes:
        """All ``length`` bytes at ``offset`` in one read; callers bound ``length`` by a limit."""
        self.fileobj.seek(offset)
        return self.fileobj.read(max(0, min(length, self.size - offset)))

    def u32(self, offset: int, order: str = ">") -> int:
        """An unsigned 32-bit integer at ``offset`` in byte order ``order``."""
        return struct.unpack(order + "I", self.exact(offset, 4))[0]


def _name(kind: bytes) -> str:
    """A frame, box or chunk type as printable text: non-ASCII and control bytes escaped."""
    return "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in kind)


def _size(n: int) -> str:
    """A byte count for a person: '16 MB', '340 KB', '12 bytes'."""
    if n >= MiB:
        return f"{n / MiB:,.0f} MB"
    if n >= 1024:
        return f"{n / 1024:,.0f} KB"
    return f"{n:,} bytes"


def _too_many(template: str, limit: int, count: int | None = None) -> str:
    """A reason for too many of something; ``count`` None means counting stopped at the limit.

    ``template`` has one ``{}`` for the amount: 'ID3v2 tag with {} frames'.
    """
    amount = f"more than {limit:,}" if count is None else f"{count:,}"
    return f"{template.format(amount)} (limit {limit:,})"


def _too_big(what: str, n: int, limit: int) -> str:
    """A reason for something too large: 'ID3v2 tag of 20 MB (limit 16 MB)'."""
    return f"{what} of {_size(n)} (limit {_size(limit)})"


# --- ID3v2 ---------------------------------------------------------------------------------


_ID3_PICTURES = frozenset({b"APIC", b"PIC"})
# The frame flag saying "compressed with zlib", per major version (v2.2 has no frame flags).
_ID3_COMPRESSED = {2: 0, 3: 0x0080, 4: 0x0008}


def _syncsafe(raw: bytes) -> int | None:
    """A 28-bit ID3v2 syncsafe integer, or None when a high bit is set (so it is not one)."""
    if any(b & 0x80 for b in raw):
        return None
    return (raw[0] << 21) | (raw[1] << 14) | (raw[2] << 7) | raw[3]


def _id3_length(header: bytes) -> int | None:
    """The whole length of the ID3v2 tag whose 10-byte header this is, or None if it is not one."""
    size = _syncsafe(header[6:10])
    if header[:3] != b"ID3" or header[3] not in (2, 3, 4) or size is None:
        return None
    footer = 10 if header[3] == 4 and header[5] & 0x10 else 0
    return 10 + size + footer


def _check_id3(data: _Bytes, offset: int, limits: TagLimits) -> str | None:
    """Check the ID3v2 tag at ``offset``: its size, its frame count, each frame's claims."""
    header = data.exact(offset, 10)
    size = _syncsafe(header[6:10])
    if _id3_length(header) is None or size is None:
        return None
    major, flags = header[3], header[5]
    if size > limits.max_tag_bytes:
        return _too_big("ID3v2 tag", size, limits.max_tag_bytes)
    pos, end = offset + 10, offset + 10 + size
    if major == 3 and flags & 0x80:
        # v2.3 unsynchronises the whole tag, frame headers included, so frame sizes only line
        # up after undoing it; the tag is within max_tag_bytes, so reading it is bounded.
        raw = data.whole(pos, size).replace(b"\xff\x00", b"\xff")
        data, pos, end = _Bytes(io.BytesIO(raw), len(raw), data.budget), 0, len(raw)
    if major >= 3 and flags & 0x40:
        # Extended header: v2.4 counts its own 4 size bytes (syncsafe), v2.3 does not.
        raw = data.exact(pos, 4)
        extended = _syncsafe(raw) if major == 4 else struct.unpack(">I", raw)[0] + 4
        if extended is None or pos + extended > end:
            return None
        pos += extended
    return _walk_id3_frames(data, pos, end, major, limits)


def _walk_id3_frames(data: _Bytes, pos: int, end: int, major: int, limits: TagLimits) -> str | None:
    """Walk frame headers from ``pos`` to ``end``, seeking over bodies; check count and claims."""
    header_len = 6 if major == 2 else 10
    frames = 0
    while pos + header_len <= end:
        header = data.read(pos, header_len)
        if len(header) < header_len or header[0] == 0:
            return None  # the file ends, or padding starts: readers stop here too
        if major == 2:
            frame_id, frame_size, frame_flags = header[:3], int.from_bytes(header[3:6]), 0
        else:
            frame_id, frame_flags = header[:4], int.from_bytes(header[8:10])
            # iTunes wrote v2.4 frame sizes as plain integers; a set high bit gives that away.
            plain = int.from_bytes(header[4:8])
            frame_size = (_syncsafe(header[4:8]) if major == 4 else None) or plain
        frames += 1
        data.budget.spend()
        if frames > limits.max_frames:
            # Counted, not parsed: any name counts, since readers keep unknown frames too.
            return _too_many("ID3v2 tag with {} frames", limits.max_frames)
        body = pos + header_len
        if body + frame_size > end:
            return None  # a frame running past its tag is dropped by readers
        # Only pictures and compressed frames have more to check; most frames are neither.
        if frame_id in _ID3_PICTURES or frame_flags & _ID3_COMPRESSED[major]:
            reason = _check_id3_frame(data, frame_id, major, frame_flags, body, frame_size, limits)
            if reason:
                return reason
        pos = body + frame_size
    return None


def _check_id3_frame(data: _Bytes, frame_id: bytes, major: int, flags: int, body: int,
                     size: int, limits: TagLimits) -> str | None:
    """Check one frame: a picture's size, a compressed frame's inflated size."""
    name = _name(frame_id)
    if frame_id in _ID3_PICTURES and size > limits.max_picture_bytes:
        return _too_big(f"ID3v2 picture frame {name}", size, limits.max_picture_bytes)
    declared: int | None = None
    if major == 4 and flags & 0x0008:
        # Group byte and encryption byte come before the data length indicator (syncsafe).
        if flags & 0x0001:
            at = body + bool(flags & 0x0040) + bool(flags & 0x0004)
            raw = data.exact(at, 4)
            declared = _syncsafe(raw) or int.from_bytes(raw)
    elif major == 3 and flags & 0x0080:
        declared = data.u32(body)  # v2.3 puts a plain decompressed size first
    else:
        return None
    if declared is not None and declared > limits.max_inflated_bytes:
        return f"ID3v2 frame {name} declares {_size(declared)} once decompressed " \
               f"(limit {_size(limits.max_inflated_bytes)})"
    if size * DEFLATE_MAX_RATIO > limits.max_inflated_bytes:
        return f"ID3v2 frame {name} is compressed and could inflate to " \
               f"{_size(size * DEFLATE_MAX_RATIO)} (limit {_size(limits.max_inflated_bytes)})"
    return None


# --- tags at the end of a file: APEv2, appended ID3v2.4 ---------------------------------------


def _check_trailing_tags(data: _Bytes, limits: TagLimits) -> str | None:
    """Check an APEv2 footer and an appended ID3v2.4 tag (footer '3DI'), before or after ID3v1."""
    has_id3v1 = data.read(data.size - 128, 3) == b"TAG"
    end = data.size - (128 if has_id3v1 else 0)
    footer = data.read(end - 10, 10)
    if footer[:3] == b"3DI" and (size := _syncsafe(footer[6:10])) is not None:
        if size > limits.max_tag_bytes:
            return _too_big("ID3v2 tag", size, limits.max_tag_bytes)
        start = end - size - 20
        is_tag = start >= 0 and data.read(start, 3) == b"ID3"
        if is_tag and (reason := _check_id3(data, start, limits)):
            return reason
    footer = data.read(end - 32, 32)
    if footer[:8] == b"APETAGEX":
        size, items = struct.unpack("<II", footer[12:20])
        if size > limits.max_tag_bytes:
            return _too_big("APEv2 tag", size, limits.max_tag_bytes)
        if items > limits.max_frames:
            return _too_many("APEv2 tag with {} items", limits.max_frames, items)
    return None


# --- FLAC and Vorbis comments ----------------------------------------------------------------

_FLAC_PICTURE, _FLAC_VORBIS_COMMENT, _FLAC_INVALID = 6, 4, 127


def _check_flac(data: _Bytes, offset: int, limits: TagLimits) -> str | None:
    """Walk the metadata blocks after 'fLaC': block count, total size, comments, pictures."""
    pos, blocks, total = offset + 4, 0, 0
    while True:
        header = data.exact(pos, 4)
        last, kind, length = header[0] & 0x80, header[0] & 0x7F, int.from_bytes(header[1:4])
        if kind == _FLAC_INVALID:
            return None  # not metadata: a garbled file, the decoder will say so
        blocks += 1
        data.budget.spend()
        total += 4 + length
        if blocks > limits.max_atoms:
            return _too_many("FLAC metadata with {} blocks", limits.max_atoms)
        if total > limits.max_tag_bytes:
            return f"FLAC metadata of more than {_size(limits.max_tag_bytes)} " \
                   f"(limit {_size(limits.max_tag_bytes)})"
        if kind == _FLAC_PICTURE and length > limits.max_picture_bytes:
            return _too_big("FLAC picture", length, limits.max_picture_bytes)
        if kind == _FLAC_VORBIS_COMMENT:
            reason = _check_comments(data, pos + 4, pos + 4 + length, "FLAC metadata", limits)
            if reason:
                return reason
        if last:
            return None
        pos += 4 + length


def _check_comments(data: _Bytes | _Packet, pos: int, end: int, where: str,
                    limits: TagLimits) -> str | None:
    """Check a Vorbis comment list (vendor, count, comments) held in bytes ``pos``..``end``."""
    pos += 4 + struct.unpack("<I", data.exact(pos, 4))[0]  # skip the vendor string
    count = struct.unpack("<I", data.exact(pos, 4))[0]
    if count > limits.max_frames:
        return _too_many(f"{where} with {{}} Vorbis comments", limits.max_frames, count)
    pos += 4
    # The longest honest comment is a picture (METADATA_BLOCK_PICTURE), base64-coded: 4/3 larger.
    longest = limits.max_picture_bytes * 4 // 3
    for _ in range(count):  # count <= max_frames: bounded work
        data.budget.spend()
        length = struct.unpack("<I", data.exact(pos, 4))[0]
        if length > longest:
            return _too_big(f"{where} Vorbis comment", length, longest)
        pos += 4 + length
        if pos > end:
            return None  # a comment overruns its block: garbled, not hostile
    return None


# --- Ogg ---------------------------------------------------------------------------------------

_OGG_PAGE = struct.Struct("<4sBBqIIIB")
# The identification packet's magic, and the comment packet's magic that goes with it.
_OGG_CODECS = ((b"\x01vorbis", b"\x03vorbis"), (b"OpusHead", b"OpusTags"))


class _Packet:
    """One Ogg packet, whose bytes are scattered over pages, read by packet offset."""

    def __init__(self, data: _Bytes, spans: list[tuple[int, int]]) -> None:
        self.data = data
        self.budget = data.budget
        self.spans = spans  # (file offset, length) pieces, in order
        self.starts = list(accumulate((length for _, length in spans), initial=0))
        self.size = self.starts[-1]

    def exact(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at packet offset ``offset``.

        Raises:
            _Truncated: the packet ends first.
        """
        out = b""
        # Find the piece by bisection: a packet may be spread over thousands of tiny pages.
        piece = bisect_right(self.starts, offset) - 1
        while len(out) < length and 0 <= piece < len(self.spans):
            at, span = self.spans[piece]
            want = offset + len(out) - self.starts[piece]
            out += self.data.exact(at + want, min(span - want, length - len(out)))
            piece += 1
        if len(out) != length:
            raise _Truncated
        return out


def _ogg_packets(data: _Bytes, offset: int,
                 limits: TagLimits) -> list[list[tuple[int, int]]] | None:
    """The first two packets of the first logical stream, as pieces; None if the second is over
    max_tag_bytes (the walk stops there, and after max_atoms pages)."""
    packets: list[list[tuple[int, int]]] = [[]]
    sizes = [0]
    pos, serial = offset, None
    for _ in range(limits.max_atoms):
        data.budget.spend()
        if len(packets) > 2:
            break
        magic, _, _, _, page_serial, _, _, segments = _OGG_PAGE.unpack(data.exact(pos, 27))
        if magic != b"OggS":
            break
        lacing = data.exact(pos + 27, segments)
        body = pos + 27 + segments
        pos = body + sum(lacing)
        serial = page_serial if serial is None else serial
        if page_serial != serial:
            continue  # another logical stream multiplexed in
        start = end = body
        for lace in lacing:
            end += lace
            sizes[-1] += lace
            if lace < 255:  # a lacing value under 255 ends a packet
                packets[-1].append((start, end - start))
                packets.append([])
                sizes.append(0)
                start = end
        if end > start:
            packets[-1].append((start, end - start))
        if len(sizes) >= 2 and sizes[1] > limits.max_tag_bytes:
            return None
    return packets[:2]


def _check_ogg(data: _Bytes, offset: int, limits: TagLimits) -> str | None:
    """Check a Vorbis or Opus comment header (the second packet): its size and comments."""
    packets = _ogg_packets(data, offset, limits)
    if packets is None:
        return f"Ogg comment header of more than {_size(limits.max_tag_bytes)} " \
               f"(limit {_size(limits.max_tag_bytes)})"
    if len(packets) < 2:
        return None
    ident, comments = _Packet(data, packets[0]), _Packet(data, packets[1])
    for ident_magic, comment_magic in _OGG_CODECS:
        if ident.size >= len(ident_magic) and ident.exact(0, len(ident_magic)) == ident_magic:
            if comments.exact(0, len(comment_magic)) != comment_magic:
                return None
            return _check_comments(comments, len(comment_magic), comments.size, "Ogg stream",
                                   limits)
    return None  # Ogg FLAC, Speex, Theora: not ours to judge


# --- MP4 ---------------------------------------------------------------------------------------

_MP4_CONTAINERS = frozenset(
    {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"udta", b"edts", b"dinf", b"moof", b"traf",
     b"mvex", b"meta", b"ilst", b"sinf", b"schi", b"tref"}
)
_MP4_FILLERS = frozenset({b"free", b"skip", b"wide"})
_MP4_TAG_BOXES = frozenset({b"udta", b"meta", b"ilst"})
# Boxes that may be any size: the audio itself, and filler readers seek over.
_MP4_UNBOUNDED = _MP4_FILLERS | {b"mdat"}
_MP4_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide"})


def _check_mp4(data: _Bytes, offset: int, limits: TagLimits) -> str | None:
    """Walk the box tree depth-first within a box budget: counts, sizes, nesting, ilst, covr."""
    # Each entry is the rest of a list of sibling boxes: (next box, end of parent, depth, parent).
    stack: list[tuple[int, int, int, bytes]] = [(offset, data.size, 0, b"")]
    boxes = fillers = items = 0
    while stack:
        pos, end, depth, parent = stack.pop()
        if pos + 8 > end:
            continue
        size, kind = struct.unpack(">I4s", data.exact(pos, 8))
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data.exact(pos + 8, 8))[0], 16
        elif size == 0:
            size = end - pos  # "to the end of the file"
        if size < header:
            return f"MP4 box '{_name(kind)}' with size {size} (smaller than its header)"
        boxes += 1
        data.budget.spend()
        fillers += kind in _MP4_FILLERS
        items += parent == b"ilst"
        if boxes > limits.max_atoms:
            break
        if depth > limits.max_depth:
            return f"MP4 boxes nested more than {limits.max_depth} deep"
        if items > limits.max_frames:
            return _too_many("MP4 ilst with {} items", limits.max_frames)
        if kind in _MP4_TAG_BOXES and size > limits.max_tag_bytes:
            return _too_big(f"MP4 tag box '{_name(kind)}'", size, limits.max_tag_bytes)
        if kind not in _MP4_UNBOUNDED and size > limits.max_box_bytes:
            return _too_big(f"MP4 box '{_name(kind)}'", size, limits.max_box_bytes)
        if kind == b"data" and parent == b"covr" and size > limits.max_picture_bytes:
            return _too_big("MP4 cover (covr)", size, limits.max_picture_bytes)
        stack.append((pos + size, end, depth, parent))
        if kind in _MP4_CONTAINERS or parent == b"ilst":  # every ilst item holds data boxes
            child = pos + header
            # meta is a full box (4 bytes of version and flags) except in old QuickTime files.
            if kind == b"meta" and data.read(child + 4, 4) != b"hdlr":
                child += 4
            stack.append((child, min(pos + size, end), depth + 1, kind))
    over_budget = boxes > limits.max_atoms
    if fillers > limits.max_free_atoms:
        return _too_many("MP4 box tree with {} free boxes", limits.max_free_atoms,
                         None if over_budget else fillers)
    if over_budget:
        return _too_many("MP4 box tree with {} boxes", limits.max_atoms)
    return None


# --- RIFF/WAV and AIFF -------------------------------------------------------------------------


@dataclass(frozen=True)
class _ChunkForm:
    """A chunked container: its name, byte order, audio chunk, and chunks that hold ID3v2."""

    name: str
    order: str
    audio: bytes
    id3: frozenset[bytes] = frozenset({b"id3 ", b"ID3 "})


_WAV = _ChunkForm("WAV", "<", b"data")
_AIFF = _ChunkForm("AIFF", ">", b"SSND")


def _check_chunks(data: _Bytes, offset: int, limits: TagLimits, form: _ChunkForm) -> str | None:
    """Walk the chunks after the 12-byte RIFF/FORM header: count, sizes, embedded ID3v2."""
    pos, chunks = offset + 12, 0
    while pos + 8 <= data.size:
        kind, size = struct.unpack(form.order + "4sI", data.exact(pos, 8))
        chunks += 1
        data.budget.spend()
        if chunks > limits.max_atoms:
            return _too_many(f"{form.name} file with {{}} chunks", limits.max_atoms)
        # An audio chunk larger than the file is only a truncated or streamed file.
        if kind != form.audio and size > limits.max_box_bytes:
            return _too_big(f"{form.name} chunk '{_name(kind)}'", size, limits.max_box_bytes)
        if kind in form.id3 and data.read(pos + 8, 3) == b"ID3":
            reason = _check_id3(data, pos + 8, limits)
            if reason:
                return reason
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
    return None


# --- the sniffers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Format:
    """A container format: how its first bytes look and how it is checked."""

    name: str
    matches: Callable[[bytes], bool]
    check: Callable[[_Bytes, int, TagLimits], str | None]


FORMATS: tuple[_Format, ...] = (
    _Format("FLAC", lambda head: head[:4] == b"fLaC", _check_flac),
    _Format("Ogg", lambda head: head[:4] == b"OggS", _check_ogg),
    _Format("MP4", lambda head: head[4:8] in _MP4_FIRST_BOXES, _check_mp4),
    _Format("WAV", lambda head: head[:4] == b"RIFF" and head[8:12] == b"WAVE",
            partial(_check_chunks, form=_WAV)),
    _Format("AIFF", lambda head: head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"),
            partial(_check_chunks, form=_AIFF)),
)

# Files may carry a few ID3v2 tags in a row before the audio (or a FLAC header).
_MAX_LEADING_ID3 = 4


def check_file(fileobj: BinaryIO, size: int, limits: TagLimits) -> str | None:
    """None when the file's tags and containers are within ``limits``, else a short reason.

    ``fileobj`` is a seekable binary file and ``size`` its length in bytes.

    Raises:
        OSError: reading the file failed.
    """
    budget = _Budget(limits)
    data = _Bytes(fileobj, size, budget)
    try:
        offset = 0
        for _ in range(_MAX_LEADING_ID3):
            head = data.read(offset, 10)
            length = _id3_length(head) if len(head) == 10 else None
            if length is None:
                break
            if reason := _check_id3(data, offset, limits):
                return reason
            offset += length
        head = data.read(offset, 16)
        for fmt in FORMATS:
            if fmt.matches(head):
                if reason := fmt.check(data, offset, limits):
                    return reason
                break
        return _check_trailing_tags(data, limits)
    except _Truncated:
        return None
    except _OverBudget:
        return _too_many("tags and containers with {} headers in all", budget.total)
