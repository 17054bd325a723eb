"""The parts of one scene's logic that the higher parts build on, made once per scene and shared.

``OsteoROIMRMLLogic`` builds them; ``levels.SceneLevels`` and ``rows.SceneResults`` use them.
"""
from __future__ import annotations

from dataclasses import dataclass

from .calibration import SceneCalibration
from .live_update import LiveUpdates, VolumeCache
from .persistence import SceneState
from .placement_view import PlacementView
from .roi_markups import RoiMarkups

__all__ = ["SceneParts"]


@dataclass(frozen=True)
class SceneParts:
    """The state, the ROI markups, the volume cache, the observers and the calibration of one scene,
    and the placement shown in the views."""

    store: SceneState
    rois: RoiMarkups
    volumes: VolumeCache
    live: LiveUpdates
    cal: SceneCalibration
    view: PlacementView

    @classmethod
    def of(cls, scene, wake) -> "SceneParts":
        """The parts of ``scene``; ``wake()`` is called when an observed edit is pending."""
        store = SceneState(scene)
        rois = RoiMarkups(store)
        volumes = VolumeCache()
        live = LiveUpdates(store, rois, wake)
        return cls(store, rois, volumes, live, SceneCalibration(store, volumes, live), PlacementView(store))
