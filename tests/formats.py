"""Small fixture files in the published layouts of each public data set (no downloaded data).

Each writer follows the layout in the data set's README: separators, header or
not, column order, encoding. The MovieLens writers all write the same ratings,
movies and users, so the importers can be checked against each other.
"""

from __future__ import annotations

from pathlib import Path

from recall.importers.movielens import ML100K_GENRES, ML1M_OCCUPATIONS

# movie id, title (with year as GroupLens writes it), ml-100k release date, genres
ML_MOVIES = [
    (1, "Toy Story (1995)", "01-Jan-1995", ["Animation", "Children's", "Comedy"]),
    (2, "GoldenEye (1995)", "01-Jan-1995", ["Action", "Adventure", "Thriller"]),
    (3, "Misérables, Les (1995)", "01-Jan-1995", ["Drama", "War"]),  # Latin-1 in 100k and 1m; a comma
    (4, "Unknown Movie", "", []),  # no year, no genre
]
# user id, age, gender, occupation, zip
ML_USERS = [(1, 24, "M", "technician", "85711"), (2, 53, "F", "other", "94043"), (3, 17, "M", "student", "02138")]
ML1M_USER_CODES = {1: (18, 17), 2: (50, 0), 3: (1, 10)}  # age code, occupation code
# user, item, rating, timestamp
ML_RATINGS = [(1, 1, 5, 881250949), (1, 2, 3, 881250950), (2, 1, 4, 881251000), (2, 3, 2, 881252000),
              (3, 2, 5, 881253000), (3, 4, 1, 881254000), (1, 3, 4, 881255000)]
# user, item, tag, timestamp
ML_TAGS = [(1, 1, "pixar", 881250960), (2, 1, "Pixar", 881251010), (2, 1, "funny", 881251020),
           (3, 2, "bond", 881253010)]


def _write(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def write_ml100k(folder: Path) -> Path:
    """``u.data`` (tab), ``u.item`` / ``u.user`` (pipe, Latin-1), ``u.genre``; no headers."""
    _write(folder / "u.data", [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in ML_RATINGS])
    items = []
    for movie, title, date, genres in ML_MOVIES:
        flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
        url = "http://us.imdb.com/M/title-exact?" + title.replace(" ", "%20")
        items.append(f"{movie}|{title}|{date}||{url}|{flags}")
    _write(folder / "u.item", items, encoding="latin-1")
    _write(folder / "u.user", [f"{u}|{a}|{g}|{o}|{z}" for u, a, g, o, z in ML_USERS])
    _write(folder / "u.genre", [f"{g}|{i}" for i, g in enumerate(ML100K_GENRES)] + [""])
    return folder


def write_ml1m(folder: Path, *, users: bool = True, tags: bool = False, encoding: str = "latin-1") -> Path:
    """``ratings.dat``, ``movies.dat``, ``users.dat`` (``::``-separated; ml-10m: tags.dat, no users)."""
    _write(folder / "ratings.dat", [f"{u}::{i}::{r}::{t}" for u, i, r, t in ML_RATINGS])
    _write(folder / "movies.dat", [f"{m}::{title}::{'|'.join(g) or '(no genres listed)'}"
                                   for m, title, _, g in ML_MOVIES], encoding=encoding)
    if users:
        _write(folder / "users.dat", [f"{u}::{g}::{ML1M_USER_CODES[u][0]}::{ML1M_USER_CODES[u][1]}::{z}"
                                      for u, _, g, _, z in ML_USERS])
    if tags:
        _write(folder / "tags.dat", [f"{u}::{i}::{tag}::{t}" for u, i, tag, t in ML_TAGS])
    return folder


def write_ml10m(folder: Path) -> Path:
    return write_ml1m(folder, users=False, tags=True, encoding="utf-8")


def _quoted(text: str) -> str:
    return f'"{text}"' if "," in text or '"' in text else text


def write_ml_latest(folder: Path, *, tags: bool = True) -> Path:
    """``ratings.csv``, ``movies.csv`` (titles quoted when they hold a comma), ``tags.csv``; UTF-8, headers."""
    _write(folder / "ratings.csv", ["userId,movieId,rating,timestamp"]
           + [f"{u},{i},{float(r)},{t}" for u, i, r, t in ML_RATINGS])
    _write(folder / "movies.csv", ["movieId,title,genres"]
           + [f"{m},{_quoted(title)},{'|'.join(g) or '(no genres listed)'}" for m, title, _, g in ML_MOVIES])
    if tags:
        _write(folder / "tags.csv", ["userId,movieId,tag,timestamp"]
               + [f"{u},{i},{_quoted(tag)},{t}" for u, i, tag, t in ML_TAGS])
    return folder


ML_WRITERS = {"ml-100k": write_ml100k, "ml-1m": write_ml1m, "ml-10m": write_ml10m, "ml-latest": write_ml_latest}
OCCUPATION_NAMES = ML1M_OCCUPATIONS
