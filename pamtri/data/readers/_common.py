"""Pieces every data set reader shares: split names, name lists, label XML with line numbers, id parsing."""
from __future__ import annotations

import codecs
import os
import re
import xml.parsers.expat as expat
from dataclasses import dataclass
from pathlib import Path

from pamtri.common.errors import DataError
from pamtri.data.images import list_images
from pamtri.data.records import Problems, check_image, resolve_image

SPLITS = ("train", "query", "test")
SPLIT_ALIASES = {"gallery": "test"}

_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._:-]+)[\"']")
_CAMERA = re.compile(r"^[cC]?0*(\d+)$")


def check_split(split: str, root: str | os.PathLike | None = None, valid: tuple[str, ...] = SPLITS) -> str:
    """The canonical split name (``gallery`` -> ``test``); DataError naming it and the valid ones otherwise."""
    name = SPLIT_ALIASES.get(split, split) if isinstance(split, str) else split
    if name not in valid:
        raise DataError(root, f"unknown split {split!r}; valid splits: {', '.join(valid)}"
                              + (" (gallery = test)" if "test" in valid else ""))
    return name


def image_dir(root: Path, split: str) -> Path:
    """The image folder of a split: ``image_train``, ``image_query``, ``image_test``."""
    return Path(root) / f"image_{split}"


def locate_image(folder: Path, name: str, source, line: int | None, check_images: bool) -> str:
    """Absolute path of ``name`` inside ``folder`` (refusing escapes); existence checked when asked."""
    full = resolve_image(folder, name, source, line)
    if check_images:
        check_image(full, name, source, line)
    return str(full)


def read_name_list(path: Path, problems: Problems) -> list[tuple[int, str]]:
    """(line number, image name) of a ``name_*.txt`` file; blank lines skipped, duplicates reported."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        problems.error(DataError(path, "name list does not exist"))
        return []
    except UnicodeDecodeError as exc:
        problems.error(DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})"))
        return []
    out, seen = [], {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        name = raw.strip()
        if not name:
            continue
        if len(name.split()) != 1:
            problems.error(DataError(path, f"expected one image name per line, got {name!r}", lineno))
            continue
        if name in seen:
            problems.error(DataError(path, f"duplicate image name {name!r} (first on line {seen[name]})", lineno))
            continue
        seen[name] = lineno
        out.append((lineno, name))
    return out


def read_text_lines(path: Path, problems: Problems, what: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-blank lines of a UTF-8 ``what`` file; [] (reported) when unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        problems.error(DataError(path, f"{what} does not exist"))
        return []
    except UnicodeDecodeError as exc:
        problems.error(DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})"))
        return []
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_id_pairs(path: Path, problems: Problems, what: str, key: str, value: str) -> list[tuple[int, str, int]]:
    """(line, key, integer value) of a ``<key> <value>`` list (VehicleID); bad lines and repeated keys reported."""
    out, first = [], {}
    for line, text in read_text_lines(path, problems, what):
        fields = text.split()
        try:
            if len(fields) != 2:
                raise DataError(path, f"expected 2 fields '<{key}> <{value}>', got {len(fields)}", line)
            if fields[0] in first:
                raise DataError(path, f"duplicate {key} {fields[0]!r} (first on line {first[fields[0]]})", line)
            number = parse_int(fields[1], value, path, line)
            if number < 0:
                raise DataError(path, f"{value} {fields[1]!r} is negative", line)
        except DataError as err:
            problems.error(err)
            continue
        first[fields[0]] = line
        out.append((line, fields[0], number))
    return out


def pick_test_size(sizes: tuple[int, ...], size: int | None, folder: Path, pattern: str) -> int:
    """The test size to read: ``size`` when its list is present, the smallest present when None; DataError else.

    ``pattern`` is the list file name with ``{size}`` in it (for the message).
    """
    if not sizes:
        raise DataError(folder, f"no test list {pattern.format(size='<N>')} found")
    if size is None:
        return sizes[0]
    if size not in sizes:
        raise DataError(folder / pattern.format(size=size), f"no test set of size {size} (present: "
                                                            f"{', '.join(map(str, sizes))}); pass one of those")
    return size


def names_of_split(root: Path, split: str, problems: Problems) -> tuple[Path, list[tuple[int, str]]]:
    """The split's names from ``name_<split>.txt`` or, when that file is absent, its image folder listing."""
    name_file = root / f"name_{split}.txt"
    if name_file.exists():
        return name_file, read_name_list(name_file, problems)
    folder = image_dir(root, split)
    if folder.is_dir():
        return folder, [(None, n) for n in list_images(folder)]
    problems.error(DataError(root, f"split {split!r} has neither {name_file.name} nor {folder.name}/"))
    return name_file, []


@dataclass
class XmlItem:
    """One ``<Item>`` element: its line in the file and its attributes."""
    line: int
    attrs: dict

    def element(self) -> str:
        name = self.attrs.get("imageName")
        return f"<Item imageName={name!r}>" if name else "<Item>"


def decode_xml(data: bytes, path) -> str:
    """XML bytes -> text, honouring a BOM or the declared encoding (gb2312 read as its superset gb18030)."""
    if data.startswith(codecs.BOM_UTF8):
        enc, data = "utf-8", data[len(codecs.BOM_UTF8):]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        enc = "utf-16"
    else:
        m = _XML_DECL.match(data[:512])
        enc = m.group(1).decode("ascii") if m else "utf-8"
    try:
        codec = codecs.lookup(enc).name
    except LookupError:
        raise DataError(path, f"XML declares an unknown encoding {enc!r}", 1) from None
    if codec in ("gb2312", "gbk"):
        codec = "gb18030"  # files that declare gb2312 often hold GBK characters; gb18030 decodes both
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(path, f"bytes are not valid {enc} ({exc.reason})", line) from None


def read_label_xml(path: Path, problems: Problems, required: tuple[str, ...],
                   tag: str = "Item") -> list[XmlItem]:
    """Every ``<Item>`` of a label XML with its line number; items missing a required attribute are reported."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        problems.error(DataError(path, "label XML does not exist"))
        return []
    except OSError as exc:
        problems.error(DataError(path, f"cannot read ({exc.strerror})"))
        return []
    try:
        text = decode_xml(data, path)
    except DataError as err:
        problems.error(err)
        return []
    # The text is re-encoded as UTF-8 and expat told so, which overrides the declared encoding
    # (expat itself cannot read multi-byte encodings such as gb2312).
    parser = expat.ParserCreate(encoding="UTF-8")
    items: list[XmlItem] = []
    declared: list[tuple[int, str]] = []

    def start(name, attrs):
        if name == tag:
            items.append(XmlItem(parser.CurrentLineNumber, attrs))
        elif name == "Items" and "number" in attrs:
            declared.append((parser.CurrentLineNumber, attrs["number"]))

    parser.StartElementHandler = start
    try:
        parser.Parse(text.encode("utf-8"), True)
    except expat.ExpatError as exc:
        problems.error(DataError(path, f"XML does not parse: {expat.ErrorString(exc.code)} "
                                       f"(column {exc.offset + 1})", exc.lineno))
        return []
    if not items:
        problems.error(DataError(path, f"no <{tag}> elements found"))
        return []
    good = []
    for item in items:
        missing = [a for a in required if not item.attrs.get(a, "").strip()]
        if missing:
            problems.error(DataError(path, f"missing attribute{'s' if len(missing) > 1 else ''} "
                                           f"{', '.join(missing)}", item.line, item.element()))
            continue
        good.append(item)
    for line, number in declared:
        if number.strip().isdigit() and int(number) != len(items):
            problems.warn(DataError(path, f"<Items number={number!r}> but the file has {len(items)} <{tag}> "
                                          f"elements", line))
    return good


def parse_int(text: str, what: str, path, line, element=None) -> int:
    """An integer attribute or field (leading zeros allowed); DataError otherwise."""
    try:
        return int(text.strip())
    except (ValueError, AttributeError):
        raise DataError(path, f"{what} {text!r} is not an integer", line, element) from None


def parse_camera(text: str, path, line, element=None) -> int:
    """Camera id from ``c012``, ``C012`` or ``12``."""
    m = _CAMERA.match(text.strip())
    if not m:
        raise DataError(path, f"camera id {text!r} is not of the form c<number>", line, element)
    return int(m.group(1))


def parse_class(text: str, what: str, first: int, count: int, path, line, element=None) -> int:
    """A class id numbered from ``first`` in the file -> 0-based; DataError when out of range."""
    value = parse_int(text, f"{what} id", path, line, element)
    if not first <= value < first + count:
        raise DataError(path, f"{what} id {text!r} out of range {first}-{first + count - 1}", line, element)
    return value - first
