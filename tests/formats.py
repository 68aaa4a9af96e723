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


# --------------------------------------------------------------------------- RetailRocket (Kaggle)

T_MS = 1433221332117  # a real first timestamp of events.csv, in ms
# timestamp (ms), visitor, event, item, transaction id
RR_EVENTS = [
    (T_MS, 257597, "view", 355908, None),
    (T_MS + 1_000, 992329, "view", 248676, None),
    (T_MS + 60_000, 257597, "addtocart", 355908, None),
    (T_MS + 120_000, 257597, "transaction", 355908, 4000),
    (T_MS + 7 * 86_400_000, 992329, "view", 355908, None),  # after the item moved to category 2
    (T_MS + 8 * 86_400_000, 111016, "view", 999999, None),  # an item without properties
]
# timestamp (ms), item, property, value: weekly snapshots; most values are hashed text
RR_PROPERTIES = [
    (T_MS - 86_400_000, 355908, "categoryid", "1338"),
    (T_MS - 86_400_000, 355908, "888", "1116713 960601 n277.200"),
    (T_MS + 5 * 86_400_000, 355908, "categoryid", "1000"),  # re-categorised
    (T_MS + 2 * 86_400_000, 248676, "categoryid", "491"),  # known only after its first event
    (T_MS, 248676, "available", "1"),
    (T_MS, 248676, "790", "n15360.000"),
]
RR_TREE = [(1338, 1000), (1000, 250), (250, None), (491, None)]


def write_retailrocket(folder: Path, *, split_properties: bool = True) -> Path:
    _write(folder / "events.csv", ["timestamp,visitorid,event,itemid,transactionid"]
           + [f"{t},{v},{e},{i},{'' if x is None else x}" for t, v, e, i, x in RR_EVENTS])
    rows = [f"{t},{i},{p},{v}" for t, i, p, v in RR_PROPERTIES]
    halves = [rows[:3], rows[3:]] if split_properties else [rows]
    for n, half in enumerate(halves, 1):
        _write(folder / f"item_properties_part{n}.csv", ["timestamp,itemid,property,value"] + half)
    _write(folder / "category_tree.csv", ["categoryid,parentid"]
           + [f"{c},{'' if p is None else p}" for c, p in RR_TREE])
    return folder


# --------------------------------------------------------------------------- Tianchi display-ad clicks

# user, time_stamp, adgroup_id, pid, nonclk, clk
TC_SAMPLE = [(581738, 1494137644, 1, "430548_1007", 1, 0), (449818, 1494638778, 3, "430548_1007", 1, 0),
             (914836, 1494650879, 4, "430548_1007", 1, 0), (914836, 1494651029, 5, "430539_1007", 0, 1),
             (581738, 1494137644, 5, "430539_1007", 0, 1)]
# adgroup_id, cate_id, campaign_id, customer, brand, price
TC_ADS = [(1, 6406, 83237, 1, "95471", 170.0), (3, 1489, 109256, 2, "NULL", 8.0), (4, 6406, 3, 3, "3", 1.5),
          (5, 4520, 387991, 6, "NULL", 990.0)]
# userid, cms_segid, cms_group_id, final_gender_code, age_level, pvalue_level, shopping_level, occupation,
# new_user_class_level (empty where unknown, as in the real file)
TC_PROFILE = [(581738, 0, 7, 2, 2, "", 3, 0, "3"), (449818, 0, 2, 1, 2, "1", 3, 0, ""),
              (914836, 0, 8, 2, 2, "2", 3, 0, "2")]


def write_tianchi(folder: Path) -> Path:
    _write(folder / "raw_sample.csv", ["user,time_stamp,adgroup_id,pid,nonclk,clk"]
           + [",".join(map(str, row)) for row in TC_SAMPLE])
    _write(folder / "ad_feature.csv", ["adgroup_id,cate_id,campaign_id,customer,brand,price"]
           + [",".join(map(str, row)) for row in TC_ADS])
    # The published header ends in a space: 'new_user_class_level '.
    _write(folder / "user_profile.csv", ["userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,"
                                         "shopping_level,occupation,new_user_class_level "]
           + [",".join(map(str, row)) for row in TC_PROFILE])
    return folder
