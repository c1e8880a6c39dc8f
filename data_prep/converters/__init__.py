"""Converters by annotation format; a registry entry picks one by name and passes it options."""

from data_prep.converters.base import Converter, Plan
from data_prep.converters.bbbc041 import Bbbc041Converter
from data_prep.converters.coco import CocoConverter
from data_prep.converters.folders import ClassFoldersConverter
from data_prep.converters.masks import MasksConverter
from data_prep.converters.npz import NpzConverter
from data_prep.converters.points import PointsConverter
from data_prep.converters.qa import QaConverter
from data_prep.converters.tables import AttributeTableConverter
from data_prep.converters.voc import VocConverter
from data_prep.converters.yolo import YoloConverter

CONVERTERS: dict[str, type[Converter]] = {
    c.name: c
    for c in (
        VocConverter,
        CocoConverter,
        YoloConverter,
        Bbbc041Converter,
        ClassFoldersConverter,
        AttributeTableConverter,
        MasksConverter,
        PointsConverter,
        QaConverter,
        NpzConverter,
    )
}

__all__ = ["CONVERTERS", "Converter", "Plan"]
