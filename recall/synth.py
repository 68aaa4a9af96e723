"""A realistic synthetic interaction log, generated fully vectorised with numpy.

The log is meant to be *learnable*: it carries the structures that recall
channels exploit (category affinity, demographic taste, similar-item browsing,
directed co-purchase pairs) on top of the popularity skew that a plain
"most popular" baseline exploits, so a good channel visibly beats popularity.

Generative story
----------------
Catalogue (depends on ``n_items`` and ``seed`` only, see :func:`planted_pairs`):

* ``max(5, n_items // 50)`` categories of power-law sizes and popularities;
  brands nested in categories; a price bucket per item (category level + noise).
* Zipf popularity within each category, and a per-item intrinsic quality that
  scales click-through (so CTR varies by item, ~3-10 %).
* Each category is cut into small clusters of "similar items" (~8 items).
* ``n_items // 20`` anchor items, each with 1-3 companion items (mostly in a
  complementary category): the directed co-purchase pairs ("phone -> case").
* ~2 % cold items: in the items table, never in the events.

Users: gender x age band (8 demographic groups), each group with its own
preference distribution over categories; every user has 2-4 favourite
categories drawn from their group's preferences; a power-law (Lomax) activity
level; a power-law sized city; ~0.1 % bot-like users who click half of what
they are shown, uniformly over the catalogue.

Log:

* A user has ``1 + Poisson(1.4 * Lomax(1.5))`` sessions of lognormal length
  (impressions), placed at random in ``[start_ts, start_ts + days * 86400)`` and
  at least one hour apart; inside a session the impressions are seconds apart
  and a click adds a dwell of tens of seconds.
* A session is cut into segments (a new segment every ~50 impressions on
  average); a segment has a theme category (a favourite one with probability
  0.85, else one drawn from the group preferences) and a seed item (drawn by
  sqrt-Zipf: what users look for is less skewed than what they are shown)
  whose cluster gets extra exposure. 65 % of impressions are on-theme (60 % of
  those from the seed's cluster, 40 % Zipf in the theme category), the rest
  are "feed" exposures drawn by global popularity, which users rarely click.
* Funnel: each impression is clicked with probability ``ctr[item] * user
  clickiness * context`` (context: cluster 2.5, category 1.2, feed 0.3);
  a click turns into fav / cart with item-dependent probabilities and a cart
  (or, more rarely, a fav) into a buy, each deeper behaviour being its own row
  seconds to minutes after the click.
* A click on an anchor is followed, with probability 0.45 (click only) up to
  0.75 (bought), by an impression + click of one of its companions later in the
  same session or in one of the next sessions; the companion click goes
  through the same funnel. Nothing plants the reverse direction.

Scale: about 100 events per user on average, impressions included (~92 %
impressions, ~6.5 % clicks, ~1.5 % fav / cart / buy), independent of ``n_items``
and, apart from very short windows that cap heavy users, of ``days``:
``synthesize(50_000, 20_000, 14, 0)`` gives roughly 5M events.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recall import schema as S
from recall.io import BEHAVIOR_DTYPE, Dataset, normalise_events, normalise_items, normalise_users

GENDERS = ("F", "M")
AGE_BANDS = ("18-24", "25-34", "35-44", "45+")
N_CITIES = 10

# Behaviour codes, as in recall.schema.BEHAVIORS.
IMPRESSION, CLICK, FAV, CART, BUY = (S.BEHAVIOR_CODE[b] for b in S.BEHAVIORS)

# --- catalogue -------------------------------------------------------------
ITEMS_PER_CATEGORY = 50
MIN_CATEGORIES = 5
ZIPF_EXPONENT = 1.2          # item popularity within a category
CLUSTER_SIZE = 8             # "similar items" browsed together
COLD_FRACTION = 0.02
ITEMS_PER_ANCHOR = 20        # n_items // 20 anchors
COMPANION_OTHER_CATEGORY = 0.7
MEAN_CTR = 0.045

# --- users -----------------------------------------------------------------
BOT_FRACTION = 0.001
FAVOURITE_SHARE = 0.85       # segments themed on a favourite category

# --- sessions and browsing -------------------------------------------------
SESSION_RATE = 1.4           # sessions = 1 + Poisson(SESSION_RATE * Lomax(1.5))
SESSION_LEN_MEDIAN = 18      # impressions per session, lognormal
MAX_SESSION_LEN = 200
MAX_SESSIONS_PER_DAY = 20
SEGMENT_SWITCH = 0.02        # per impression: start a new theme segment
ON_THEME = 0.65              # share of impressions from the segment's theme
FROM_CLUSTER = 0.6           # share of on-theme impressions from the seed's cluster
CLICK_BOOST = {"cluster": 2.5, "category": 1.2, "feed": 0.3}
BOT_CTR = 0.5
BOT_SESSION_LEN_MEDIAN = 40
SESSION_GAP = 3600           # minimum seconds between sessions (covers all follow-ups)

NORMALISE_CHUNK = 2_000_000  # rows per normalise_events call (bounds its memory)

# --- follow-ups --------------------------------------------------------------
# Probability that an anchor interaction is followed by a companion click,
# indexed by the deepest behaviour the anchor click reached.
FOLLOW_BY_DEPTH = np.array([0.0, 0.45, 0.55, 0.65, 0.75])
FOLLOW_SAME_SESSION = 0.5


class _GroupedSampler:
    """Draw, for many group ids at once, one element of each group by weight.

    All groups' elements are laid out in one array, group after group, with a
    cumulative weight that runs from ``g`` to ``g + 1`` inside group ``g``;
    sampling group ``g`` with a uniform ``u`` is then a single
    ``searchsorted(cum, g + u)`` for the whole batch. Zero-weight elements are
    never drawn (their cumulative value equals their predecessor's, and the
    search is right-sided). Every group needs a positive total weight.
    """

    def __init__(self, group: np.ndarray, element: np.ndarray, weight: np.ndarray, n_groups: int):
        order = np.argsort(group, kind="stable")
        group, self.element, weight = group[order], element[order], weight[order].astype(np.float64)
        total = np.bincount(group, weight, minlength=n_groups)
        if np.any(total <= 0):
            raise ValueError("every group of a sampler needs a positive total weight")
        running = np.cumsum(weight / total[group])
        first = np.searchsorted(group, np.arange(n_groups))
        before = np.where(first > 0, running[np.maximum(first - 1, 0)], 0.0)
        # Restart the cumulative sum at each group; computing "within" by
        # subtraction keeps zero-weight heads exactly at 0.
        within = np.clip(running - before[group], 0.0, 1.0)
        last = np.r_[first[1:], group.size] - 1
        within[last] = 1.0
        self.cum = group + within

    def sample(self, groups: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One element per entry of ``groups``, using the uniforms ``u`` in [0, 1)."""
        x = groups + np.minimum(u, 1.0 - 1e-9)
        return self.element[np.searchsorted(self.cum, x, side="right")]


@dataclass
class _Catalogue:
    """Items in an internal order: category blocks, most popular first in each."""

    n_items: int
    n_categories: int
    category: np.ndarray      # internal item -> category
    brand: np.ndarray         # internal item -> brand (globally numbered)
    price: np.ndarray         # internal item -> price bucket 0..9
    ctr: np.ndarray           # intrinsic click-through rate
    p_fav: np.ndarray
    p_cart: np.ndarray
    p_buy_cart: np.ndarray
    p_buy_fav: np.ndarray
    cold: np.ndarray          # bool
    warm_items: np.ndarray    # internal ids of non-cold items
    category_pop: np.ndarray  # share of exposure per category
    by_category: _GroupedSampler   # Zipf within a category
    seed_by_category: _GroupedSampler  # sqrt-Zipf: the item a segment starts from
    by_cluster: _GroupedSampler    # similar items around a seed
    by_popularity: _GroupedSampler  # the "feed": one group, global popularity
    cluster: np.ndarray       # internal item -> cluster id (-1 for cold)
    is_anchor: np.ndarray     # bool
    companion_start: np.ndarray  # per internal item, CSR into companions (anchors only)
    companion_count: np.ndarray
    companions: np.ndarray
    item_id: np.ndarray       # internal item -> public item_id (a random permutation)


def _block_first(sorted_keys: np.ndarray) -> np.ndarray:
    """For each position of a sorted key array, the index where its block of equal keys starts."""
    starts = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    return np.maximum.accumulate(np.where(starts, np.arange(sorted_keys.size), 0))


def _power_weights(n: int, exponent: float) -> np.ndarray:
    return 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent


def _build_catalogue(n_items: int, rng: np.random.Generator) -> _Catalogue:
    n_cat = min(n_items, max(MIN_CATEGORIES, n_items // ITEMS_PER_CATEGORY))

    # Category sizes: power law, each category at least one item. Items are
    # kept in blocks by category so "rank inside the category" is the offset.
    size_weights = _power_weights(n_cat, 0.6)
    size_weights = size_weights[rng.permutation(n_cat)]
    extra = rng.choice(n_cat, n_items - n_cat, p=size_weights / size_weights.sum())
    category = np.sort(np.r_[np.arange(n_cat), extra]).astype(np.int64)
    sizes = np.bincount(category, minlength=n_cat)
    first = np.r_[0, np.cumsum(sizes)[:-1]]
    rank = np.arange(n_items) - first[category]

    # Bigger categories tend to be more popular, with noise.
    category_pop = sizes ** 0.8 * rng.lognormal(0.0, 0.5, n_cat)
    category_pop /= category_pop.sum()

    # Brands nested in categories: ~1 brand per 8 items, Zipf-sized.
    n_brands = np.maximum(1, np.ceil(sizes / 8)).astype(np.int64)
    brand_first = np.r_[0, np.cumsum(n_brands)[:-1]]
    brand_u = rng.random(n_items)
    # Inverse-CDF of a 1/(b+1) law over each category's brands, vectorised.
    local_brand = np.floor(np.expm1(brand_u * np.log1p(n_brands[category]))).astype(np.int64)
    brand = brand_first[category] + np.minimum(local_brand, n_brands[category] - 1)

    level = rng.integers(1, 9, n_cat)
    price = np.clip(level[category] + rng.integers(-2, 3, n_items), 0, 9)

    # Intrinsic quality drives CTR and conversion; lognormal so CTR spans ~3-10 %.
    quality = rng.lognormal(0.0, 0.35, n_items)
    quality /= quality.mean()
    ctr = np.clip(MEAN_CTR * quality, 0.01, 0.3)
    cheap = 1.3 - 0.06 * price          # cheaper items convert better
    p_fav = np.clip(0.07 * np.sqrt(quality), 0.0, 0.5)
    p_cart = np.clip(0.10 * np.sqrt(quality) * cheap, 0.0, 0.6)
    p_buy_cart = np.clip(0.35 * cheap, 0.0, 0.9)
    p_buy_fav = np.clip(0.08 * cheap, 0.0, 0.5)

    # Cold items: new tail items, never the head of their category.
    cold = np.zeros(n_items, dtype=bool)
    n_cold = int(round(COLD_FRACTION * n_items))
    candidates = np.flatnonzero(rank > 0)
    if n_cold and candidates.size:
        cold[rng.choice(candidates, min(n_cold, candidates.size), replace=False)] = True
    warm_items = np.flatnonzero(~cold)

    zipf = np.where(cold, 0.0, 1.0 / (rank + 1.0) ** ZIPF_EXPONENT)
    by_category = _GroupedSampler(category, np.arange(n_items), zipf, n_cat)
    # What a user comes looking for is less skewed than what gets shown.
    seed_by_category = _GroupedSampler(category, np.arange(n_items), np.sqrt(zipf), n_cat)
    within_share = zipf / np.bincount(category, zipf, minlength=n_cat)[category]
    global_pop = category_pop[category] * within_share
    by_popularity = _GroupedSampler(np.zeros(n_items, dtype=np.int64), np.arange(n_items),
                                    global_pop, 1)

    # Similar-item clusters: a random partition of each category's warm items.
    key = rng.random(warm_items.size)
    order = np.lexsort((key, category[warm_items]))
    members = warm_items[order]
    member_cat = category[members]
    pos = np.arange(members.size) - _block_first(member_cat)
    local = pos // CLUSTER_SIZE
    boundary = np.r_[True, (np.diff(member_cat) != 0) | (np.diff(local) != 0)]
    member_cluster = np.cumsum(boundary) - 1
    n_clusters = int(member_cluster[-1]) + 1
    cluster = np.full(n_items, -1, dtype=np.int64)
    cluster[members] = member_cluster
    # Inside a cluster, popular items are still shown more, but only by sqrt.
    by_cluster = _GroupedSampler(member_cluster, members, np.sqrt(zipf[members]), n_clusters)

    # Anchors: warm items, biased towards popular ones so the pairs are seen.
    n_anchor = max(1, n_items // ITEMS_PER_ANCHOR)
    n_anchor = min(n_anchor, max(1, warm_items.size // 2))
    gumbel = np.log(np.sqrt(global_pop[warm_items])) - np.log(-np.log(rng.random(warm_items.size)))
    anchors = np.sort(warm_items[np.argpartition(-gumbel, n_anchor - 1)[:n_anchor]])
    is_anchor = np.zeros(n_items, dtype=bool)
    is_anchor[anchors] = True

    # Companions: in a complementary category most of the time, drawn by
    # sqrt-popularity among non-anchor warm items, so no pair is planted in
    # both directions.
    complement = rng.permutation(n_cat)
    n_comp = rng.integers(1, 4, n_anchor)
    pair_anchor = np.repeat(anchors, n_comp)
    other = rng.random(pair_anchor.size) < COMPANION_OTHER_CATEGORY
    pair_cat = np.where(other, complement[category[pair_anchor]], category[pair_anchor])
    companion_weight = np.where(cold | is_anchor, 0.0, np.sqrt(zipf))
    # A category may hold no eligible companion: fall back to the whole catalogue.
    eligible = np.bincount(category, companion_weight, minlength=n_cat) > 0
    by_companion = _GroupedSampler(category, np.arange(n_items),
                                   np.where(eligible[category], companion_weight, 1.0), n_cat)
    anywhere = _GroupedSampler(np.zeros(n_items, dtype=np.int64), np.arange(n_items),
                               companion_weight + (companion_weight.sum() == 0) * ~cold, 1)
    u = rng.random(pair_anchor.size)
    pair_comp = np.where(eligible[pair_cat], by_companion.sample(pair_cat, u),
                         anywhere.sample(np.zeros(pair_anchor.size, dtype=np.int64), u))
    valid = (pair_comp != pair_anchor) & ~is_anchor[pair_comp] & ~cold[pair_comp]
    pairs = np.unique(np.stack([pair_anchor[valid], pair_comp[valid]], axis=1), axis=0)
    companion_count = np.bincount(pairs[:, 0], minlength=n_items)
    companion_start = np.r_[0, np.cumsum(companion_count)[:-1]]
    is_anchor = companion_count > 0

    return _Catalogue(
        n_items=n_items, n_categories=n_cat, category=category, brand=brand, price=price,
        ctr=ctr, p_fav=p_fav, p_cart=p_cart, p_buy_cart=p_buy_cart, p_buy_fav=p_buy_fav,
        cold=cold, warm_items=warm_items, category_pop=category_pop,
        by_category=by_category, seed_by_category=seed_by_category, by_cluster=by_cluster, by_popularity=by_popularity,
        cluster=cluster, is_anchor=is_anchor, companion_start=companion_start,
        companion_count=companion_count, companions=pairs[:, 1],
        item_id=rng.permutation(n_items).astype(np.int64),
    )


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams for the catalogue and the log, both from ``default_rng(seed)``.

    The catalogue stream depends on nothing but ``n_items``, so
    :func:`planted_pairs` can rebuild the same catalogue without the users.
    """
    catalogue_rng, log_rng = np.random.default_rng(seed).spawn(2)
    return catalogue_rng, log_rng


def planted_pairs(n_items: int, seed: int) -> pl.DataFrame:
    """The directed co-purchase pairs planted by ``synthesize(_, n_items, _, seed)``.

    Returns
    -------
    pl.DataFrame
        Columns ``anchor_id``, ``companion_id`` (Int64 public item ids): a click,
        cart or buy of the anchor is often followed by a click of the companion;
        the reverse order is not planted.
    """
    cat = _build_catalogue(n_items, _rngs(seed)[0])
    anchors = np.repeat(np.arange(n_items), cat.companion_count)
    return pl.DataFrame({
        "anchor_id": cat.item_id[anchors],
        "companion_id": cat.item_id[cat.companions],
    }, schema={"anchor_id": pl.Int64, "companion_id": pl.Int64})


def planted_clusters(n_items: int, seed: int) -> pl.DataFrame:
    """The "similar item" clusters planted by ``synthesize(_, n_items, _, seed)``.

    Returns
    -------
    pl.DataFrame
        Columns ``item_id``, ``category_id`` and ``cluster_id`` (Int64) for every
        warm item: a session segment browses one cluster much more than the
        rest of its category, so items of a cluster co-occur in sessions.
    """
    cat = _build_catalogue(n_items, _rngs(seed)[0])
    warm = cat.warm_items
    return pl.DataFrame({
        S.ITEM: cat.item_id[warm],
        S.CATEGORY: cat.category[warm],
        "cluster_id": cat.cluster[warm],
    }, schema={S.ITEM: pl.Int64, S.CATEGORY: pl.Int64, "cluster_id": pl.Int64}).sort(S.ITEM)


@dataclass
class _Users:
    group: np.ndarray         # gender * len(AGE_BANDS) + age band
    gender: np.ndarray
    age: np.ndarray
    city: np.ndarray
    bot: np.ndarray
    clickiness: np.ndarray
    favourites: np.ndarray    # (n_users, 4) categories
    favourite_cum: np.ndarray  # (n_users, 4) cumulative weights over the favourites
    by_group: _GroupedSampler  # category given the demographic group


def _build_users(n_users: int, cat: _Catalogue, rng: np.random.Generator) -> _Users:
    n_cat = cat.n_categories
    gender = (rng.random(n_users) < 0.48).astype(np.int64)
    age = rng.choice(len(AGE_BANDS), n_users, p=[0.22, 0.36, 0.26, 0.16])
    group = gender * len(AGE_BANDS) + age
    n_groups = len(GENDERS) * len(AGE_BANDS)
    city_p = _power_weights(N_CITIES, 1.2)
    city = rng.choice(N_CITIES, n_users, p=city_p / city_p.sum())

    # Taste = popularity x a gender factor x an age factor x group noise: groups
    # that share a gender or an age band are alike, but every group differs.
    gender_f = rng.gamma(0.7, size=(len(GENDERS), n_cat))
    age_f = rng.gamma(0.9, size=(len(AGE_BANDS), n_cat))
    noise = rng.gamma(3.0, size=(n_groups, n_cat))
    pref = (cat.category_pop ** 0.7 * gender_f[np.arange(n_groups) // len(AGE_BANDS)]
            * age_f[np.arange(n_groups) % len(AGE_BANDS)] * noise) + 1e-12
    g_of = np.repeat(np.arange(n_groups), n_cat)
    by_group = _GroupedSampler(g_of, np.tile(np.arange(n_cat), n_groups), pref.ravel(), n_groups)

    # 2-4 favourite categories from the group's taste; redraw duplicates a few
    # times (a leftover duplicate just concentrates that user a bit more).
    fav = by_group.sample(np.repeat(group, 4), rng.random(n_users * 4)).reshape(n_users, 4)
    for _ in range(8):
        dup = np.zeros_like(fav, dtype=bool)
        for j in range(1, 4):
            dup[:, j] = (fav[:, :j] == fav[:, j:j + 1]).any(axis=1)
        if not dup.any():
            break
        rows = np.nonzero(dup)[0]
        fav[dup] = by_group.sample(group[rows], rng.random(rows.size))
    k = rng.choice([2, 3, 4], n_users, p=[0.35, 0.4, 0.25])
    w = rng.gamma(2.0, size=(n_users, 4)) * (np.arange(4) < k[:, None])
    favourite_cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
    favourite_cum[:, -1] = 1.0

    bot = np.zeros(n_users, dtype=bool)
    n_bots = int(round(BOT_FRACTION * n_users))
    if n_bots:
        bot[rng.choice(n_users, n_bots, replace=False)] = True
    clickiness = rng.lognormal(-0.045, 0.3, n_users)  # mean ~1
    return _Users(group=group, gender=gender, age=age, city=city, bot=bot,
                  clickiness=clickiness, favourites=fav, favourite_cum=favourite_cum,
                  by_group=by_group)


def _funnel(user, item, ts, cat: _Catalogue, rng: np.random.Generator):
    """Fav / cart / buy rows following clicks ``(user, item, ts)``.

    Returns the extra rows as ``(user, item, code, ts)`` and the depth each
    click reached (1 click, 2 fav, 3 cart, 4 buy).
    """
    n = item.size
    r = rng.random((3, n), dtype=np.float32)
    fav = r[0] < cat.p_fav[item]
    cart = r[1] < cat.p_cart[item]
    buy = np.where(cart, r[2] < cat.p_buy_cart[item], fav & (r[2] < cat.p_buy_fav[item]))
    fav_ts = ts + rng.integers(5, 120, n)
    cart_ts = ts + rng.integers(10, 300, n)
    buy_ts = np.where(cart, cart_ts, fav_ts) + rng.integers(30, 900, n)  # <= click + 1200 s
    depth = np.where(buy, 4, np.where(cart, 3, np.where(fav, 2, 1)))
    rows = [(user[m], item[m], np.full(int(m.sum()), code, dtype=np.int8), t[m])
            for m, code, t in ((fav, FAV, fav_ts), (cart, CART, cart_ts), (buy, BUY, buy_ts))]
    return tuple(np.concatenate(column) for column in zip(*rows)), depth


def synthesize(n_users: int, n_items: int, days: int, seed: int,
               start_ts: int = 1_700_006_400) -> Dataset:
    """Generate a synthetic interaction log with planted, learnable structure.

    Parameters
    ----------
    n_users, n_items : int
        Users in the users table (ids ``0..n_users-1``) and items in the items
        table (ids ``0..n_items-1``, shuffled with respect to category and
        popularity). About 2 % of items are cold: listed, never in the events.
    days : int
        Length of the window; timestamps lie in
        ``[start_ts, start_ts + days * 86400)``.
    seed : int
        Everything is drawn from ``np.random.default_rng(seed)``: the same
        arguments give identical frames.
    start_ts : int
        Window start, epoch seconds (default 2023-11-15 00:00 UTC).

    Returns
    -------
    Dataset
        ``events`` (user_id, item_id, behavior, ts) sorted by ts, ``items``
        (item_id, category_id, brand_id, price_bucket) and ``users`` (user_id,
        gender, age_band, city), all passed through the normalisers of
        :mod:`recall.io`, so dtypes match what ``load_dataset`` gives.

    Notes
    -----
    The log holds about **100 events per user** on average, impressions
    included (~92 % impressions, ~6.5 % clicks, ~1.5 % fav/cart/buy), whatever
    ``n_items`` and ``days`` (a window of a day or two caps the heaviest users a
    little): ``synthesize(50_000, 20_000, 14, 0)`` gives about 4.9M events.
    Generation is vectorised (no Python loop over users or events): about 3 s
    and 1 GB peak for 5M events, 15 s and 2 GB for 20M on two cores.
    The planted anchor -> companion pairs are given by :func:`planted_pairs`.
    See the module docstring for the generative story.
    """
    if n_users < 1 or n_items < 2 or days < 1:
        raise ValueError("synthesize needs n_users >= 1, n_items >= 2 and days >= 1")
    catalogue_rng, rng = _rngs(seed)
    cat = _build_catalogue(n_items, catalogue_rng)
    users = _build_users(n_users, cat, rng)
    window = days * 86400

    # --- sessions: power-law activity, per-user counts, then flat arrays ----
    activity = rng.pareto(1.5, n_users)
    n_sess = 1 + rng.poisson(SESSION_RATE * activity)
    n_sess = np.where(users.bot, days, n_sess)  # bots: a long crawl every day
    n_sess = np.minimum(n_sess, MAX_SESSIONS_PER_DAY * days)
    sess_user = np.repeat(np.arange(n_users), n_sess)
    n_s = sess_user.size
    bot_s = users.bot[sess_user]
    sess_len = np.round(rng.lognormal(np.log(np.where(bot_s, BOT_SESSION_LEN_MEDIAN, SESSION_LEN_MEDIAN)), 0.8, n_s))
    sess_len = np.clip(sess_len, 2, MAX_SESSION_LEN).astype(np.int64)

    # --- impressions: one row per exposure, grouped by session --------------
    n_rows = int(sess_len.sum())
    row_sess = np.repeat(np.arange(n_s, dtype=np.int32), sess_len)
    sess_first = np.r_[0, np.cumsum(sess_len)[:-1]]
    new_seg = rng.random(n_rows, dtype=np.float32) < SEGMENT_SWITCH
    new_seg[sess_first] = True
    row_seg = np.cumsum(new_seg, dtype=np.int64) - 1
    seg_user = sess_user[row_sess[new_seg]]
    del new_seg

    # Segment theme: a favourite category, or one from the group's taste.
    n_seg = seg_user.size
    slot = (users.favourite_cum[seg_user] < rng.random(n_seg)[:, None]).sum(axis=1)
    seg_cat = np.where(rng.random(n_seg) < FAVOURITE_SHARE,
                       users.favourites[seg_user, np.minimum(slot, 3)],
                       users.by_group.sample(users.group[seg_user], rng.random(n_seg)))
    seg_seed = cat.seed_by_category.sample(seg_cat, rng.random(n_seg))
    seg_cluster = cat.cluster[seg_seed]
    del seg_user

    # Exposure context per impression, then the item in that context.
    ctx = rng.random(n_rows, dtype=np.float32)
    u = rng.random(n_rows)
    from_cluster = ctx < ON_THEME * FROM_CLUSTER
    from_category = ~from_cluster & (ctx < ON_THEME)
    del ctx
    item = cat.by_popularity.sample(np.zeros(n_rows, dtype=np.int64), u)  # the feed
    idx = np.flatnonzero(from_cluster)
    item[idx] = cat.by_cluster.sample(seg_cluster[row_seg[idx]], u[idx])
    idx = np.flatnonzero(from_category)
    item[idx] = cat.by_category.sample(seg_cat[row_seg[idx]], u[idx])
    del idx, row_seg, u
    row_bot = bot_s[row_sess]
    bot_rows = np.flatnonzero(row_bot)
    item[bot_rows] = cat.warm_items[rng.integers(0, cat.warm_items.size, bot_rows.size)]
    item = item.astype(np.int32)

    # Clicks: item quality x user clickiness x how relevant the exposure was.
    boost = np.where(from_cluster, CLICK_BOOST["cluster"],
                     np.where(from_category, CLICK_BOOST["category"], CLICK_BOOST["feed"]))
    del from_cluster, from_category
    row_user = sess_user[row_sess].astype(np.int32)
    p_click = np.where(row_bot, BOT_CTR, cat.ctr[item] * users.clickiness[row_user] * boost)
    clicked = rng.random(n_rows, dtype=np.float32) < p_click
    del boost, p_click, row_bot

    # --- time: seconds between impressions, a dwell after each click --------
    step = np.minimum(1 + rng.exponential(7.0, n_rows), 60).astype(np.int64)
    dwell = np.minimum(10 + rng.exponential(40.0, n_rows), 300).astype(np.int64)
    step[1:] += np.where(clicked[:-1], dwell[:-1], 0)
    del dwell
    step[sess_first] = 0
    offset = np.cumsum(step)
    offset -= offset[sess_first][row_sess]   # seconds since the session's first impression
    del step
    sess_last = sess_first + sess_len - 1
    # A session "needs" its duration (+10 s for a last click) and the minimum gap,
    # which also leaves room for funnel and companion follow-ups (< 3000 s).
    need = offset[sess_last] + 10 + SESSION_GAP
    cum_need = np.cumsum(need)
    excl_need = cum_need - need
    excl_need -= excl_need[_block_first(sess_user)]  # time needed by the user's earlier sessions
    # Heavy users whose sessions do not fit in the window lose their last ones.
    keep_sess = excl_need + need + SESSION_GAP <= window
    if not keep_sess.all():
        keep_rows = keep_sess[row_sess]
        item, clicked, offset, row_user = (a[keep_rows] for a in (item, clicked, offset, row_user))
        new_index = (np.cumsum(keep_sess) - 1).astype(np.int32)
        row_sess = new_index[row_sess[keep_rows]]
        sess_user, need, excl_need = sess_user[keep_sess], need[keep_sess], excl_need[keep_sess]
        n_s = sess_user.size
        del keep_rows
    # Session starts: sorted uniform points in the user's free time, plus the
    # time needed by the earlier sessions: gaps are then always >= SESSION_GAP.
    total_need = np.bincount(sess_user, need, minlength=n_users).astype(np.int64)
    free = window - total_need - SESSION_GAP
    point = rng.random(n_s) * free[sess_user]
    point = point[np.lexsort((point, sess_user))]  # sorted within each user's block
    sess_start = start_ts + point.astype(np.int64) + excl_need
    del point, excl_need
    ts = sess_start[row_sess] + offset
    del offset

    # --- funnel ------------------------------------------------------------
    c_idx = np.flatnonzero(clicked)
    del clicked
    c_user, c_item, c_sess = row_user[c_idx], item[c_idx], row_sess[c_idx]
    c_ts = ts[c_idx] + rng.integers(1, 8, c_idx.size)
    del c_idx, row_sess
    deeper, depth = _funnel(c_user, c_item, c_ts, cat, rng)

    # --- planted directed pairs: anchor interaction -> companion click ------
    follow = cat.is_anchor[c_item] & (rng.random(c_item.size) < FOLLOW_BY_DEPTH[depth])
    f_user, f_anchor, f_sess, f_ts = c_user[follow], c_item[follow], c_sess[follow], c_ts[follow]
    n_f = f_anchor.size
    pick = cat.companion_start[f_anchor] + np.floor(
        rng.random(n_f) * cat.companion_count[f_anchor]).astype(np.int64)
    f_item = cat.companions[pick].astype(np.int32)
    later = np.minimum(f_sess.astype(np.int64) + rng.integers(1, 4, n_f), n_s - 1)
    same = ((rng.random(n_f) < FOLLOW_SAME_SESSION) | (sess_user[later] != f_user))
    f_click_ts = np.where(same, f_ts + rng.integers(60, 1800, n_f),
                          sess_start[later] + rng.integers(0, 120, n_f))
    f_imp_ts = f_click_ts - rng.integers(1, 6, n_f)
    f_deeper, _ = _funnel(f_user, f_item, f_click_ts, cat, rng)

    # --- assemble ----------------------------------------------------------
    parts = [
        (row_user, item, np.full(item.size, IMPRESSION, dtype=np.int8), ts),
        (c_user, c_item, np.full(c_item.size, CLICK, dtype=np.int8), c_ts),
        deeper,
        (f_user, f_item, np.full(n_f, IMPRESSION, dtype=np.int8), f_imp_ts),
        (f_user, f_item, np.full(n_f, CLICK, dtype=np.int8), f_click_ts),
        f_deeper,
    ]
    del row_user, ts, item
    return _assemble(parts, cat, users, n_users)  # it empties `parts` once concatenated


def _assemble(parts: list[tuple], cat, users, n_users: int) -> Dataset:
    """The events (``parts``: user, item index, behaviour code, ts arrays), items and users tables,
    deduplicated, sorted and normalised as :func:`recall.io.load_dataset` would give them."""
    cols = [np.concatenate([p[k] for p in parts]) for k in range(4)]
    parts.clear()  # the caller's list too: the arrays are freed before the frames are built
    codes = pl.Series(cols[2]).replace_strict(dict(enumerate(S.BEHAVIORS)),
                                              return_dtype=BEHAVIOR_DTYPE)
    events = pl.DataFrame({
        S.USER: pl.Series(cols[0]).cast(pl.Int64),
        S.ITEM: pl.Series(cat.item_id[cols[1]]),
        S.BEHAVIOR: codes,
        S.TS: pl.Series(cols[3].astype(np.int64)),
    })
    del cols, codes
    # Sorting on every column makes the order deterministic and puts the rare
    # exact duplicates (e.g. two favs of one item in the same second after two
    # quick clicks) next to each other, so dropping them is one cheap pass and
    # normalise_events has nothing left to warn about.
    key = [S.TS, S.USER, S.ITEM, S.BEHAVIOR]
    events = events.sort(key)
    repeat = pl.all_horizontal([pl.col(c) == pl.col(c).shift(1) for c in key]).fill_null(False)
    events = events.filter(~repeat)

    items = pl.DataFrame({
        S.ITEM: cat.item_id,
        S.CATEGORY: cat.category.astype(np.int64),
        S.BRAND: cat.brand.astype(np.int64),
        "price_bucket": cat.price.astype(np.int64),
    }).sort(S.ITEM)
    users_df = pl.DataFrame({
        S.USER: np.arange(n_users, dtype=np.int64),
        "gender": np.array(GENDERS)[users.gender],
        "age_band": np.array(AGE_BANDS)[users.age],
        "city": np.char.add("c", users.city.astype(str)),
    })
    where = Path("<synth>")
    # normalise_events checks and casts column by column and runs a hash-based
    # unique(): on 20M rows that transiently costs several GB. The rows are
    # already unique, so normalising slices and concatenating gives the same
    # frame with a bounded memory overhead.
    chunks = [normalise_events(events.slice(lo, NORMALISE_CHUNK), where)
              for lo in range(0, events.height, NORMALISE_CHUNK)]
    events = pl.concat(chunks, rechunk=True)
    del chunks
    return Dataset(events=events, items=normalise_items(items, where),
                   users=normalise_users(users_df, where))
