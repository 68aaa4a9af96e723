"""MovieLens in every layout GroupLens ships, or as RecBole atomic files, detected from the folder.

Layouts (from each release's README):

- ``ml-100k``: ``u.data`` (tab-separated ``user id | item id | rating | timestamp``),
  ``u.item`` (pipe-separated, Latin-1: ``movie id | movie title | release date |
  video release date | IMDb URL |`` then 19 genre flags), ``u.user`` (pipe-separated
  ``user id | age | gender | occupation | zip code``); no header lines.
- ``ml-1m`` / ``ml-10m``: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``),
  ``movies.dat`` (``MovieID::Title::Genres``, genres ``|``-separated), ``users.dat``
  (ml-1m only: ``UserID::Gender::Age::Occupation::Zip-code``, age and occupation
  as codes), ``tags.dat`` (ml-10m: ``UserID::MovieID::Tag::Timestamp``).
- ``ml-latest``, ``ml-latest-small``, ``ml-20m``, ``ml-25m``, ``ml-32m``: ``ratings.csv``
  (``userId,movieId,rating,timestamp``), ``movies.csv`` (``movieId,title,genres``, titles
  quoted when they hold a comma), optional ``tags.csv`` (``userId,movieId,tag,timestamp``).
- RecBole atomic files (``NAME.inter`` / ``.item`` / ``.user``): :mod:`recall.importers.recbole`.

Every layout gives the same tables: events from the ratings through the thresholds
(:func:`~recall.importers.common.rating_events`), items with ``title`` (the year
cut off), ``release_year`` (from the title), ``genres`` (List[str]) and
``category_id`` (first genre), plus ``tags`` (the most used, when the release
has tags); users, where the release has them, with ``gender``, ``age_band``,
``occupation`` (a name) and ``zip_code``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import polars as pl

from recall import schema as S
from recall.errors import RecallError
from recall.importers.common import age_band, map_values, rating_events, thresholds
from recall.importers.plan import Plan
from recall.importers.recbole import plan_recbole
from recall.importers.layout import TextFile, read_file
from recall.importers.text import Skipped, check_on_bad_lines, existing

ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")
ML1M_OCCUPATIONS = ("other", "academic/educator", "artist", "clerical/admin", "college/grad student",
                    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
                    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
                    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer")
NO_GENRES = "(no genres listed)"
ML = "MovieLens"
MAX_TAGS = 20  # tags kept per movie, the most used first
RATINGS = ("user_id", "item_id", "rating", "timestamp")
TAGS = ("user_id", "item_id", "tag", "timestamp")
# "Toy Story (1995)": the year closes the title.
YEAR_SUFFIX = r"\s*\((\d{4})\)\s*$"


@dataclass(frozen=True)
class Layout:
    """The files of one MovieLens release layout and how its movies and users become tables."""

    name: str
    ratings: TextFile
    movies: TextFile
    movie_table: Callable[[pl.LazyFrame], pl.LazyFrame]
    users: TextFile | None = None
    user_table: Callable[[pl.LazyFrame], pl.LazyFrame] | None = None
    tags: TextFile | None = None


def _title_and_year(fallback: pl.Expr | None = None) -> list[pl.Expr]:
    """``title`` without its closing ``(YYYY)``, and ``release_year`` from it (else from ``fallback``)."""
    title = pl.col("title").str.strip_chars()
    year = title.str.extract(YEAR_SUFFIX, 1).cast(pl.Int64)
    if fallback is not None:
        year = year.fill_null(fallback)
    return [title.str.replace(YEAR_SUFFIX, "").alias("title"), year.alias("release_year")]


def _genres(genres: pl.Expr) -> list[pl.Expr]:
    genres = genres.list.eval(pl.element().filter(pl.element() != NO_GENRES))
    return [genres.alias("genres"), genres.list.first().alias(S.CATEGORY)]


def _ml100k_movies(movies: pl.LazyFrame) -> pl.LazyFrame:
    flags = pl.concat_list([pl.when(pl.col(g) == "1").then(pl.lit(g)) for g in ML100K_GENRES]).list.drop_nulls()
    # 'release date' is 01-Jan-1995: its year stands in when the title has none.
    release = pl.col("release_date").str.extract(r"(\d{4})\s*$", 1).cast(pl.Int64)
    return movies.select(S.ITEM, *_title_and_year(release), *_genres(flags))


def _dat_csv_movies(movies: pl.LazyFrame) -> pl.LazyFrame:
    return movies.select(S.ITEM, *_title_and_year(), *_genres(pl.col("genres").str.split("|")))


def _ml100k_users(users: pl.LazyFrame) -> pl.LazyFrame:
    age = pl.col("age").cast(pl.Int64)
    return users.select(S.USER, age, age_band(age).alias("age_band"), "gender", "occupation", "zip_code")


def _ml1m_users(users: pl.LazyFrame) -> pl.LazyFrame:
    # Age is a code (1 = under 18, 18 = 18-24, ..., 56 = 56+): the band of its lower bound.
    code = pl.col("age").cast(pl.Int64)
    occupation = map_values(pl.col("occupation"), {str(i): name for i, name in enumerate(ML1M_OCCUPATIONS)})
    return users.select(S.USER, code.alias("age_code"), age_band(code).alias("age_band"), "gender",
                        occupation.alias("occupation"), "zip_code")


ML100K_ITEM = ("item_id", "title", "release_date", "video_release_date", "imdb_url", *ML100K_GENRES)
LAYOUTS = (
    Layout("ml-100k",
           ratings=TextFile(ML, "u.data", "\t", RATINGS),
           movies=TextFile(ML, "u.item", "|", ML100K_ITEM, small=True), movie_table=_ml100k_movies,
           users=TextFile(ML, "u.user", "|", ("user_id", "age", "gender", "occupation", "zip_code"), small=True),
           user_table=_ml100k_users),
    Layout("ml-1m/ml-10m",
           ratings=TextFile(ML, "ratings.dat", "::", RATINGS),
           movies=TextFile(ML, "movies.dat", "::", ("item_id", "title", "genres"), small=True),
           movie_table=_dat_csv_movies,
           users=TextFile(ML, "users.dat", "::", ("user_id", "gender", "age", "occupation", "zip_code"), small=True),
           user_table=_ml1m_users,
           tags=TextFile(ML, "tags.dat", "::", TAGS)),
    Layout("ml-latest/ml-20m/ml-25m/ml-32m",
           ratings=TextFile(ML, "ratings.csv", ",", RATINGS, header=("userId", "movieId", "rating", "timestamp")),
           movies=TextFile(ML, "movies.csv", ",", ("item_id", "title", "genres"), header=("movieId", "title", "genres"),
                           quoted=True, small=True),
           movie_table=_dat_csv_movies,
           tags=TextFile(ML, "tags.csv", ",", TAGS, header=("userId", "movieId", "tag", "timestamp"), quoted=True)),
)


# --------------------------------------------------------------------------- reading


def _read(folder: Path, spec: TextFile, required: tuple[str, ...], ints: tuple[str, ...],
          on_bad_lines: str, skipped: list[Skipped], floats: tuple[str, ...] = ()) -> pl.LazyFrame:
    return read_file(folder / spec.name, spec, on_bad_lines=on_bad_lines, skipped=skipped, required=required,
                     ints=ints, floats=floats)


def _tags(tags: pl.LazyFrame) -> pl.LazyFrame:
    """Per movie, its :data:`MAX_TAGS` most used tags (lowercased; ties alphabetical) as a list."""
    tag = pl.col("tag").str.to_lowercase()
    return (tags.select(S.ITEM, tag.alias("tag")).group_by(S.ITEM, "tag").len()
            .sort([S.ITEM, "len", "tag"], descending=[False, True, False])
            .group_by(S.ITEM, maintain_order=True).agg(pl.col("tag").head(MAX_TAGS).alias("tags")))


def _plan_layout(folder: Path, layout: Layout, limits, on_bad_lines: str) -> Plan:
    """Read one GroupLens layout from ``folder`` into a plan."""
    skipped: list[Skipped] = []
    ratings = _read(folder, layout.ratings, RATINGS, ("user_id", "item_id", "timestamp"), on_bad_lines,
                    skipped, floats=("rating",))
    events = rating_events(ratings.select(S.USER, S.ITEM, "rating", pl.col("timestamp").alias(S.TS)), limits)
    plan = Plan(events=events.select(S.USER, S.ITEM, S.BEHAVIOR, S.TS, "rating"),
                files={"events": folder / layout.ratings.name}, skipped=skipped)
    if (folder / layout.movies.name).is_file():
        movies = _read(folder, layout.movies, ("item_id",), ("item_id",), on_bad_lines, skipped)
        plan.items, plan.files["items"] = layout.movie_table(movies), folder / layout.movies.name
        if layout.tags is not None and (folder / layout.tags.name).is_file():
            tags = _read(folder, layout.tags, TAGS, ("user_id", "item_id"), on_bad_lines, skipped)
            plan.items = plan.items.join(_tags(tags), on=S.ITEM, how="left", maintain_order="left")
            plan.files["tags"] = folder / layout.tags.name
    if layout.users is not None and (folder / layout.users.name).is_file():
        users = _read(folder, layout.users, ("user_id",), ("user_id",), on_bad_lines, skipped)
        plan.users, plan.files["users"] = layout.user_table(users), folder / layout.users.name
    return plan


# --------------------------------------------------------------------------- detection


def detect_layout(path: Path) -> tuple[Layout | None, Path]:
    """The layout of a MovieLens source and its folder (None: RecBole atomic files at ``path``)."""
    if path.is_file():
        if path.suffix == ".inter":
            return None, path
        layout = next((lay for lay in LAYOUTS if lay.ratings.name == path.name), None)
        if layout is None:
            raise RecallError(f"'{path}' is not a MovieLens ratings file ({_markers()}, or NAME.inter); "
                              "pass it or the folder holding it")
        return layout, path.parent
    if any(path.glob("*.inter")):
        return None, path
    for layout in LAYOUTS:
        if (path / layout.ratings.name).is_file():
            return layout, path
    nested = sorted(str(p.parent) for lay in LAYOUTS for p in path.glob(f"*/{lay.ratings.name}"))
    hint = f"; it is in a subfolder: pass '{nested[0]}'" if nested else ""
    raise RecallError(f"no MovieLens ratings in folder '{path}': expected {_markers()} (GroupLens layouts) or "
                      f"a NAME.inter file (RecBole atomic files){hint}")


def _markers() -> str:
    return ", ".join(f"{lay.ratings.name} ({lay.name})" for lay in LAYOUTS)


def plan_movielens(src: str | Path, *, click_threshold: Any = None, fav_threshold: Any = 4,
                   on_bad_lines: str = "error") -> Plan:
    """Import MovieLens as GroupLens ships it, or as RecBole atomic files.

    Parameters
    ----------
    src
        A release folder (``ml-100k``, ``ml-1m``, ``ml-10M100K``, ``ml-latest-small``,
        ``ml-32m``, ...), its ratings file, or a folder / ``.inter`` file of RecBole
        atomic files. The layout is detected from the file names.
    click_threshold
        None (default): every rating is a ``click``. A number: every rating is an
        ``impression`` and a rating at or above it also a ``click``.
    fav_threshold
        A rating at or above this value also yields a ``fav`` (default 4; ``none``: never).
    on_bad_lines
        ``"error"`` or ``"skip"`` (drop and count lines with missing or unparsable fields).

    Returns
    -------
    Plan
        See the module docstring; the ``rating`` is kept on the events.
    """
    limits = thresholds(click_threshold, fav_threshold)
    check_on_bad_lines(on_bad_lines)
    layout, path = detect_layout(existing(src, "MovieLens source"))
    if layout is None:
        return plan_recbole(path, limits, on_bad_lines)
    return _plan_layout(path, layout, limits, on_bad_lines)
