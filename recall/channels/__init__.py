"""The channel registry: every recall channel by name, listed explicitly."""

from __future__ import annotations

from recall.channels.als import ALS
from recall.channels.association import Association
from recall.interface import Channel, ChannelParams, I2IChannel, expand_triggers
from recall.channels.crowd import Crowd
from recall.channels.ease import EASE
from recall.channels.deepwalk import DeepWalk
from recall.channels.eges import EGES, GES
from recall.channels.interest import Interest
from recall.channels.item2vec import Item2Vec
from recall.channels.itemcf import ItemCF
from recall.channels.mind import MIND
from recall.channels.node2vec import Node2Vec
from recall.channels.ranki2i import RankI2I
from recall.channels.retarget import Retarget
from recall.channels.swing import Swing
from recall.channels.usercf import UserCF
from recall.channels.youtubednn import YouTubeDNN
from recall.errors import RecallError

CHANNELS: dict[str, type[Channel]] = {
    ItemCF.name: ItemCF,
    Swing.name: Swing,
    EASE.name: EASE,
    ALS.name: ALS,
    UserCF.name: UserCF,
    RankI2I.name: RankI2I,
    Association.name: Association,
    Retarget.name: Retarget,
    Crowd.name: Crowd,
    Interest.name: Interest,
    Item2Vec.name: Item2Vec,
    DeepWalk.name: DeepWalk,
    Node2Vec.name: Node2Vec,
    EGES.name: EGES,
    GES.name: GES,
    YouTubeDNN.name: YouTubeDNN,
    MIND.name: MIND,
}


def unknown_channel(name: str) -> str:
    return f"unknown channel '{name}'; valid channels: {', '.join(sorted(CHANNELS))}"


def get_channel(name: str) -> type[Channel]:
    """The channel class registered under ``name``; a RecallError lists the valid names."""
    try:
        return CHANNELS[name]
    except KeyError:
        raise RecallError(unknown_channel(name)) from None


__all__ = ["CHANNELS", "Channel", "ChannelParams", "I2IChannel", "expand_triggers", "get_channel",
           "unknown_channel"]
