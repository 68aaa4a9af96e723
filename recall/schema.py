"""Fixed column names and behaviour vocabulary, used everywhere past the I/O boundary."""

from __future__ import annotations

USER = "user_id"
ITEM = "item_id"
BEHAVIOR = "behavior"
TS = "ts"  # epoch seconds, Int64
CATEGORY = "category_id"
BRAND = "brand_id"
NEIGHBOR = "neighbor_id"
SCORE = "score"
RANK = "rank"
CHANNELS = "channels"

# Ordered by depth of the funnel: the order is used to pick a user's strongest
# behaviour on an item and to encode behaviours as small integers.
BEHAVIORS: tuple[str, ...] = ("impression", "click", "fav", "cart", "buy")
BEHAVIOR_CODE = {name: code for code, name in enumerate(BEHAVIORS)}

EVENT_COLUMNS = (USER, ITEM, BEHAVIOR, TS)

# Timestamps above this are taken to be milliseconds (or finer): 1e11 seconds is
# the year 5138, while 1e11 milliseconds is 1973.
MAX_EPOCH_SECONDS = 10**11
