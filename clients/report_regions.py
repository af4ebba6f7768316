"""Boxes the model drew (clients.boxes) as SR content items: spatial coordinates (SCOORD)
on the image they were drawn on (pure; highdicom).

Each box is one branch of the report's root container:

    CONTAINS TEXT  "Anatomical Structure" (SCT 91723000) = the box's label
      INFERRED FROM SCOORD  "Image Region" (DCM 111030), POLYLINE: the box's outline, closed
                            (5 points, column\\row in the original image's pixels, (0, 0)
                            the top-left pixel's outer corner, as DICOM's SCOORD counts)
        SELECTED FROM IMAGE "Source image" (DCM 121324): the image's SOP class and instance
                            (and frame, for a multi-frame image)

SCOORD has no rectangle: a closed POLYLINE is how SR draws one. Enhanced SR takes SCOORD
(only SCOORD3D needs Comprehensive 3D SR), so the report stays the Enhanced SR of
clients.report_sr.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from clients.boxes import Box

STRUCTURE = codes.SCT.AnatomicalStructure
REGION = codes.DCM.ImageRegion
SOURCE_IMAGE = codes.DCM.SourceImage
LABEL_MAX = 1024  # TextValue (UT) may be longer; a label is a name


def region_item(box: Box, image: Dataset, frame: int | None = None) -> hd.sr.TextContentItem:
    """One box on `image` (the instance the model was shown) as TEXT -> SCOORD -> IMAGE."""
    source = hd.sr.ImageContentItem(
        name=SOURCE_IMAGE,
        referenced_sop_class_uid=str(image.SOPClassUID),
        referenced_sop_instance_uid=str(image.SOPInstanceUID),
        referenced_frame_numbers=None if frame is None else frame + 1,
        relationship_type=hd.sr.RelationshipTypeValues.SELECTED_FROM,
    )
    outline = hd.sr.ScoordContentItem(
        name=REGION,
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array(box.corners(), dtype=np.float64),
        relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
    )
    outline.ContentSequence = hd.sr.ContentSequence([source])
    label = (box.label or "unlabelled region")[:LABEL_MAX]
    item = hd.sr.TextContentItem(
        STRUCTURE, label, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    item.ContentSequence = hd.sr.ContentSequence([outline])
    return item


def region_items(
    boxes: Sequence[Box], image: Dataset, frame: int | None = None
) -> list[hd.sr.TextContentItem]:
    return [region_item(box, image, frame) for box in boxes]
