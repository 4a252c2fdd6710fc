r"""LFW's protocol files: people and pairs files, and verification pairs drawn from an aligned identity folder.

LFW (Huang et al. 2007, "Labeled Faces in the Wild") ships, beside the images:

* ``peopleDevTrain.txt`` / ``peopleDevTest.txt`` (View 1, disjoint people): a first line with the number of people,
  then one ``name<TAB>number of images`` line per person;
* ``people.txt`` (View 2): a first line with the number of folds (10), then per fold a line with its number of
  people followed by that many ``name<TAB>number of images`` lines;
* pairs files (``pairs.txt``, ``pairsDevTrain.txt``, ``pairsDevTest.txt``), read by :func:`load_lfw_pairs`.

:func:`draw_lfw_pairs` draws a larger pair set than the official ones from the people of a people file, over the
images an aligned folder actually holds (a detector may have skipped some), and :func:`write_lfw_pairs` saves it in
``pairs.txt``'s format (``"10\t300"``: per fold 300 same-person lines, then 300 different-person lines), so that
every reader of LFW pairs reads it. :func:`identity_folder_pairs` turns any aligned identity folder into a test set.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch

from crossres.data.codec import IMAGE_EXTENSIONS, ImageFiles
from crossres.data.folder import _scan_identity_folder
from crossres.data.pairs import PairSet
from crossres.errors import InputError

__all__ = [
    "SamePair",
    "DifferentPair",
    "draw_lfw_pairs",
    "export_lfw_pairs",
    "identity_folder_pairs",
    "lfw_image_numbers",
    "lfw_people_names",
    "load_lfw_pairs",
    "load_lfw_people",
    "write_lfw_pairs",
]

SamePair = tuple[str, int, int]
"""``(name, n1, n2)``: images ``n1 < n2`` of one person (LFW numbers, 1-based)."""
DifferentPair = tuple[str, int, str, int]
"""``(name1, n1, name2, n2)`` with ``name1 < name2``."""

_COUNT = re.compile(r"^[1-9]\d*$")
_PEOPLE_FORMAT = (
    "expected LFW's people format: a first line with the number of people (peopleDevTrain.txt, peopleDevTest.txt) "
    "or of folds (people.txt: then per fold its number of people), then 'name<TAB>number of images' lines"
)


# ------------------------------------------------------------------------------------------- people files
def load_lfw_people(path: str | Path) -> list[dict[str, int]]:
    """Read an LFW people file: ``peopleDevTrain.txt``, ``peopleDevTest.txt`` or ``people.txt``.

    Args:
        path: the people file.

    Returns:
        One ``{name: number of images}`` per fold, in file order: a single one for View 1's files, ten for
        ``people.txt``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        InputError: on a malformed line, a count that does not match the lines that follow, or a person listed
            twice (a ``ValueError``); the message names the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LFW people file {path} not found (e.g. peopleDevTrain.txt of LFW)")
    lines = [line.strip() for line in path.read_text().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise InputError(f"{path}: empty file; {_PEOPLE_FORMAT}")

    def count(lineno: int, what: str) -> int:
        text = lines[lineno - 1] if lineno <= len(lines) else ""
        if not _COUNT.match(text):
            got = repr(text) if lineno <= len(lines) else "the end of the file"
            raise InputError(f"{path}:{lineno}: expected {what} (a positive integer), got {got}; {_PEOPLE_FORMAT}")
        return int(text)

    first = count(1, "the number of people or of folds")
    folded = len(lines) > 1 and bool(_COUNT.match(lines[1]))
    seen: dict[str, int] = {}
    folds: list[dict[str, int]] = []
    lineno = 1  # the last line read
    for fold in range(first if folded else 1):
        if folded:
            lineno += 1
            size, header = count(lineno, f"the number of people of fold {fold + 1} of {first}"), lineno
        else:
            size, header = first, 1
        people: dict[str, int] = {}
        for _ in range(size):
            lineno += 1
            fields = lines[lineno - 1].split() if lineno <= len(lines) else []
            if len(fields) != 2 or not _COUNT.match(fields[1]) or _COUNT.match(fields[0]):
                got = repr(lines[lineno - 1]) if lineno <= len(lines) else "the end of the file"
                raise InputError(
                    f"{path}:{lineno}: expected 'name<TAB>number of images' (line {header} announces {size} people"
                    f"{f' in fold {fold + 1}' if folded else ''}), got {got}"
                )
            name = fields[0]
            if name in seen:
                raise InputError(f"{path}:{lineno}: {name} is listed twice (first on line {seen[name]})")
            seen[name] = lineno
            people[name] = int(fields[1])
        folds.append(people)
    if lineno < len(lines):
        where = f"{first} folds" if folded else f"the {first} people line 1 announces"
        raise InputError(f"{path}:{lineno + 1}: expected the end of the file after {where}, got {lines[lineno]!r}")
    return folds


def lfw_people_names(path: str | Path) -> list[str]:
    """Every person of an LFW people file (all folds of ``people.txt``), in file order.

    Args:
        path: the people file (:func:`load_lfw_people`).

    Returns:
        The names.
    """
    return [name for fold in load_lfw_people(path) for name in fold]


# -------------------------------------------------------------------------------------------- pairs files
def load_lfw_pairs(
    pairs_file: str | Path, image_root: str | Path, name: str = "lfw", check_files: bool = True
) -> PairSet:
    r"""Read an LFW ``pairs.txt`` (or ``pairsDevTest.txt``) in its original format.

    The header is ``"<folds>\t<n>"`` (``"10\t300"``: 10 folds of ``n`` positive then ``n`` negative pairs) or a
    single ``"<n>"``; then ``name\tn1\tn2`` same-person lines and ``name1\tn1\tname2\tn2`` different-person
    lines. Image ``n`` of ``name`` is ``image_root/name/name_<n:04d>.jpg`` (or ``.png``/``.jpeg`` when that is the
    file there, as in a ``crossres align --ext png`` tree). Images are decoded on access.

    With a single-count header (View 1's ``pairsDevTrain.txt``/``pairsDevTest.txt``: ``n`` same-person lines, then
    ``n`` different-person lines) the pairs are returned alternating, same-person first, so that every contiguous
    fold of the 10-fold protocol holds both kinds; ``"<folds>\t<n>"`` files keep their order (their folds are
    balanced already, and per-pair protocol files follow it).

    Args:
        pairs_file: the pairs file.
        image_root: the LFW image directory (``lfw/`` or ``lfw-deepfunneled/`` of an aligned copy).
        name: pair-set name used in metric keys.
        check_files: verify that every referenced image exists.

    Returns:
        The pair set over :class:`ImageFiles` (each image listed once).

    Raises:
        FileNotFoundError: if the pairs file or (with ``check_files``) a referenced image is missing.
        ValueError: on a malformed line (message gives file and line number) or a wrong number of pairs.
    """
    pairs_file, image_root = Path(pairs_file), Path(image_root)
    if not pairs_file.is_file():
        raise FileNotFoundError(f"LFW pairs file {pairs_file} not found")
    lines = pairs_file.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"{pairs_file}: empty file; expected a header line like '10\\t300'")
    header = lines[0].split()
    if not header or len(header) > 2 or not all(_COUNT.match(v) for v in header):
        raise ValueError(f"{pairs_file}:1: expected a header '<folds>\\t<pairs per class>' (e.g. '10\\t300')")
    expected = 2 * int(header[0]) * (int(header[1]) if len(header) == 2 else 1)
    index: dict[Path, int] = {}
    pairs: list[tuple[int, int]] = []
    issame: list[bool] = []

    def image(person: str, number: str, lineno: int) -> int:
        if not _COUNT.match(number):
            raise ValueError(f"{pairs_file}:{lineno}: image number {number!r} is not a positive integer")
        stem = str(image_root / person / f"{person}_{int(number):04d}")
        path = next((Path(stem + ext) for ext in IMAGE_EXTENSIONS if Path(stem + ext).is_file()), Path(stem + ".jpg"))
        if path not in index:
            if check_files and not path.is_file():
                raise FileNotFoundError(
                    f"{pairs_file}:{lineno}: image {path} (or .jpeg, .png) not found under {image_root} (for an "
                    "aligned folder: a photo the aligner skipped, listed in its skipped.csv)"
                )
            index[path] = len(index)
        return index[path]

    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if len(fields) == 3:
            pairs.append((image(fields[0], fields[1], lineno), image(fields[0], fields[2], lineno)))
            issame.append(True)
        elif len(fields) == 4:
            pairs.append((image(fields[0], fields[1], lineno), image(fields[2], fields[3], lineno)))
            issame.append(False)
        else:
            raise ValueError(
                f"{pairs_file}:{lineno}: expected 'name<TAB>n1<TAB>n2' or 'name1<TAB>n1<TAB>name2<TAB>n2', got {line!r}"
            )
    if len(pairs) != expected:
        raise ValueError(f"{pairs_file}: header {lines[0]!r} announces {expected} pairs, found {len(pairs)}")
    if len(header) == 1:  # View 1 lists all same-person pairs first: alternate them so that every fold is balanced
        same = [k for k, flag in enumerate(issame) if flag]
        different = [k for k, flag in enumerate(issame) if not flag]
        order = [k for both in itertools.zip_longest(same, different) for k in both if k is not None]
        pairs, issame = [pairs[k] for k in order], [issame[k] for k in order]
    return PairSet(
        name=name,
        images=ImageFiles(list(index)),
        pairs=torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
        issame=torch.tensor(issame, dtype=torch.bool),
    )


# ------------------------------------------------------------------------------------------------- images
def lfw_image_numbers(image_root: str | Path, people: Collection[str] | None = None) -> dict[str, list[int]]:
    """The LFW image numbers present in an (aligned) LFW folder ``image_root/<name>/<name>_<nnnn>.<ext>``.

    Args:
        image_root: the folder (``images_deepfunneled/``, or an aligned copy such as ``lfw_dlib150/`` with ``.png``
            chips).
        people: only these people (``None``: every sub-folder).

    Returns:
        ``{name: sorted image numbers}`` of the people with at least one image (``.jpg``, ``.jpeg``, ``.png``).

    Raises:
        FileNotFoundError: if ``image_root`` is not a directory.
        InputError: if an image of a person's folder is not named ``<name>_<number>`` as in LFW.
    """
    root = Path(image_root)
    if not root.is_dir():
        raise FileNotFoundError(f"LFW image folder {root} not found (expected <root>/<name>/<name>_0001.jpg|png)")
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if people is None else sorted(set(people))
    numbers: dict[str, list[int]] = {}
    for name in names:
        folder = root / name
        if not folder.is_dir():
            continue
        found: set[int] = set()
        pattern = re.compile(rf"^{re.escape(name)}_(\d+)$")
        for file in folder.iterdir():
            if not file.is_file() or file.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            match = pattern.match(file.stem)
            if match is None:
                raise InputError(
                    f"{file}: not named as an LFW image ({name}/{name}_0001{file.suffix}); pairs files refer to "
                    "images by their LFW number, so an aligned copy of LFW keeps LFW's file names"
                )
            found.add(int(match.group(1)))
        if found:
            numbers[name] = sorted(found)
    return numbers


# ------------------------------------------------------------------------------------------------ drawing
def draw_lfw_pairs(
    image_root: str | Path,
    people: Collection[str] | None = None,
    num_pairs: int = 6000,
    num_folds: int = 10,
    seed: int = 0,
) -> list[tuple[list[SamePair], list[DifferentPair]]]:
    """Draw a verification pair set in LFW's ``pairs.txt`` layout from the images an LFW folder holds.

    As LFW's own pairs: a same-person pair picks a person with at least two images uniformly, then two of their
    images; a different-person pair picks two people uniformly, then one image of each. No pair occurs twice
    (in either order); a person whose pairs are all drawn is no longer picked. Each fold holds
    ``num_pairs / (2 * num_folds)`` same-person and as many different-person pairs, sorted by name as in
    ``pairs.txt``. Unlike LFW View 2 the folds are not person-disjoint: the pairs are drawn over all people, then
    dealt to folds in drawing order. The result depends only on ``seed`` and on which images exist.

    Args:
        image_root: the (aligned) LFW folder (:func:`lfw_image_numbers`).
        people: the people to draw from (e.g. :func:`lfw_people_names` of ``peopleDevTest.txt``); people without
            images in ``image_root`` are left out. ``None``: every person of the folder.
        num_pairs: pairs in all, half same-person; a multiple of ``2 * num_folds``.
        num_folds: folds of the file (LFW: 10).
        seed: sampling seed.

    Returns:
        Per fold ``(same-person pairs, different-person pairs)``.

    Raises:
        InputError: if ``num_pairs`` is not a multiple of ``2 * num_folds``, or the folder's people cannot supply
            that many distinct pairs.
    """
    root = Path(image_root)
    if num_folds < 1 or num_pairs < 1 or num_pairs % (2 * num_folds):
        raise InputError(
            f"num_pairs={num_pairs} must be a positive multiple of 2 * num_folds = {2 * num_folds}: LFW's pairs format "
            "holds as many same-person as different-person pairs in each fold"
        )
    numbers = lfw_image_numbers(root, people)
    present = sorted(numbers)
    multi = [name for name in present if len(numbers[name]) >= 2]
    per_class = num_pairs // 2
    max_same = sum(len(numbers[n]) * (len(numbers[n]) - 1) // 2 for n in multi)
    total = sum(len(v) for v in numbers.values())
    max_different = (total**2 - sum(len(v) ** 2 for v in numbers.values())) // 2
    if per_class > max_same or per_class > max_different:
        listed = f" of the {len(people)} listed" if people is not None else ""
        raise InputError(
            f"{root}: the {len(present)} people{listed} with images there ({len(multi)} with two or more) give at "
            f"most {max_same} distinct same-person and {max_different} different-person pairs; {per_class} of each "
            "were asked for: lower the number of pairs"
        )
    rng = np.random.default_rng(seed)

    same: list[SamePair] = []
    drawn: set[tuple[str, int, str, int]] = set()
    candidates, used = list(multi), dict.fromkeys(multi, 0)
    while len(same) < per_class:
        k = int(rng.integers(len(candidates)))
        name = candidates[k]
        images = numbers[name]
        i, j = sorted(int(v) for v in rng.choice(len(images), size=2, replace=False))
        key = (name, images[i], name, images[j])
        if key in drawn:
            continue
        drawn.add(key)
        same.append((name, images[i], images[j]))
        used[name] += 1
        if used[name] == len(images) * (len(images) - 1) // 2:
            candidates.pop(k)

    different: list[DifferentPair] = []
    while len(different) < per_class:
        a, b = sorted(present[int(v)] for v in rng.choice(len(present), size=2, replace=False))
        pair = (a, numbers[a][int(rng.integers(len(numbers[a])))], b, numbers[b][int(rng.integers(len(numbers[b])))])
        if pair in drawn:
            continue
        drawn.add(pair)
        different.append(pair)

    per_fold = per_class // num_folds
    return [
        (sorted(same[f * per_fold : (f + 1) * per_fold]), sorted(different[f * per_fold : (f + 1) * per_fold]))
        for f in range(num_folds)
    ]


def write_lfw_pairs(
    path: str | Path, folds: Sequence[tuple[Sequence[SamePair], Sequence[DifferentPair]]], overwrite: bool = False
) -> None:
    r"""Write pairs in LFW's ``pairs.txt`` format: ``"<folds>\t<n>"``, then per fold ``n`` same, ``n`` different.

    Args:
        path: output file.
        folds: per fold ``(same-person pairs, different-person pairs)``, ``n`` of each (:func:`draw_lfw_pairs`).
        overwrite: replace an existing file instead of raising.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is false.
        ValueError: if the folds do not all hold ``n`` pairs of each kind.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    n = len(folds[0][0]) if folds else 0
    if n == 0 or any(len(same) != n or len(different) != n for same, different in folds):
        sizes = [(len(s), len(d)) for s, d in folds]
        raise ValueError(f"every fold must hold n > 0 same-person and n different-person pairs, got {sizes}")
    lines = [f"{len(folds)}\t{n}"]
    for same, different in folds:
        lines += [f"{name}\t{n1}\t{n2}" for name, n1, n2 in same]
        lines += [f"{a}\t{n1}\t{b}\t{n2}" for a, n1, b, n2 in different]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def export_lfw_pairs(
    image_root: str | Path,
    out: str | Path,
    people_file: str | Path | None = None,
    num_pairs: int = 6000,
    num_folds: int = 10,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, int]:
    """Draw pairs from the people of an LFW people file (:func:`draw_lfw_pairs`) and write them as a pairs file.

    Args:
        image_root: the (aligned) LFW folder.
        out: the pairs file to write (read it back with :func:`load_lfw_pairs` or as the
            evaluation set ``out@image_root``).
        people_file: e.g. ``peopleDevTest.txt``; ``None``: every person of ``image_root``.
        num_pairs: pairs in all, half same-person.
        num_folds: folds of the file.
        seed: sampling seed.
        overwrite: replace an existing ``out``.

    Returns:
        ``{"pairs", "people", "listed", "missing"}``: pairs written, people in them, people listed in
        ``people_file`` (0 without one) and listed people without images in ``image_root``.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    people = lfw_people_names(people_file) if people_file is not None else None
    folds = draw_lfw_pairs(image_root, people, num_pairs=num_pairs, num_folds=num_folds, seed=seed)
    write_lfw_pairs(out, folds, overwrite=overwrite)
    names: set[str] = set()
    for same, different in folds:
        names.update(name for name, _, _ in same)
        names.update(name for a, _, b, _ in different for name in (a, b))
    missing = 0 if people is None else len(set(people) - set(lfw_image_numbers(image_root, people)))
    return {"pairs": num_pairs, "people": len(names), "listed": len(people or ()), "missing": missing}


# --------------------------------------------------------------------------------------- identity folders
def identity_folder_pairs(root: str | Path, seed: int = 0, name: str | None = None) -> PairSet:
    """Every same-identity pair of an identity folder and as many different-identity pairs, drawn with ``seed``.

    The test set of a folder ``root/<identity>/*.png`` (any names): all ``n (n - 1) / 2`` pairs of each identity, in
    an order shuffled with ``seed``, alternating with distinct different-identity pairs (two identities uniformly,
    then one image of each), so that every contiguous fold of the 10-fold protocol is balanced.

    Args:
        root: the identity folder.
        seed: seed of the order and of the different-identity pairs.
        name: pair-set name in metric keys; default the folder's name.

    Returns:
        The pair set over :class:`~crossres.data.codec.ImageFiles` (images decoded on access).

    Raises:
        FileNotFoundError: if ``root`` is missing or holds no images.
        InputError: if no identity has two images, or the folder cannot supply as many different-identity pairs.
    """
    root = Path(root)
    classes, samples = _scan_identity_folder(root, IMAGE_EXTENSIONS)
    members: list[list[int]] = [[] for _ in classes]
    for i, (_, label) in enumerate(samples):
        members[label].append(i)
    same = [(m[a], m[b]) for m in members for a in range(len(m)) for b in range(a + 1, len(m))]
    max_different = (len(samples) ** 2 - sum(len(m) ** 2 for m in members)) // 2
    if not same or len(same) > max_different:
        raise InputError(
            f"{root}: {len(classes)} identities, {len(same)} same-identity pairs and at most {max_different} "
            "different-identity pairs; a test set needs an identity with two images and as many different-identity "
            "pairs as same-identity ones (add identities)"
        )
    rng = np.random.default_rng(seed)
    same = [same[int(i)] for i in rng.permutation(len(same))]
    drawn: set[tuple[int, int]] = set()
    different: list[tuple[int, int]] = []
    while len(different) < len(same):
        c1, c2 = (int(v) for v in rng.choice(len(members), size=2, replace=False))
        i = members[c1][int(rng.integers(len(members[c1])))]
        j = members[c2][int(rng.integers(len(members[c2])))]
        key = (min(i, j), max(i, j))
        if key not in drawn:
            drawn.add(key)
            different.append((i, j))
    pairs = [pair for both in zip(same, different, strict=True) for pair in both]
    return PairSet(
        name=name or root.name,
        images=ImageFiles([path for path, _ in samples]),
        pairs=torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
        issame=torch.tensor([k % 2 == 0 for k in range(len(pairs))], dtype=torch.bool),
    )
