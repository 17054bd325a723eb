"""A MRML scene without the Slicer application: for scripts and tests on the ``slicer-core`` wheel.

Inside 3D Slicer the application builds the scene (``slicer.mrmlScene``) with its application
logic and module logics, and saves/loads scenes through its I/O manager. Outside Slicer
(``pip install slicer-core``: MRML, VTK and the module logics, no Qt) this module does the
same minimum so that OsteoROI's MRML logic (``mrml.logic``) runs unchanged:

* :func:`new_scene` — a ``vtkMRMLScene`` with a ``vtkSlicerApplicationLogic`` (selection and
  interaction singletons, colour tables) and the Markups logic registered under "Markups", so
  that markups nodes find their selection/interaction nodes and log no errors;
* :func:`save_scene` — a ``.mrml`` file with every storable node's data written next to it, or a
  ``.mrb`` bundle (``vtkMRMLScene.WriteToMRB``);
* :func:`load_scene` — a fresh scene (as above) loaded from a ``.mrml`` or ``.mrb`` file.

The objects the scene needs alive (application logic, module logics) are kept on the returned
:class:`HeadlessScene`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import List, Optional

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

__all__ = ["HeadlessScene", "new_scene", "save_scene", "load_scene", "add_volume_from_array"]


class HeadlessScene:
    """A scene plus the logics that keep it working (hold a reference to this object)."""

    def __init__(self):
        self.scene = slicer.vtkMRMLScene()
        # A crosshair node, as qSlicerCoreApplication adds to its scene.
        crosshair = slicer.vtkMRMLCrosshairNode()
        crosshair.SetCrosshairName("default")
        self.scene.AddNode(crosshair)
        # Reading a .mrb bundle unpacks it into the cache manager's "remote cache" folder, which
        # Slicer's application sets up; do the same with a private temporary folder.
        self.cache_dir = tempfile.mkdtemp(prefix="osteoroi-mrml-cache-")
        self.cache_manager = slicer.vtkCacheManager()
        self.cache_manager.SetRemoteCacheDirectory(self.cache_dir)
        self.data_io_manager = slicer.vtkDataIOManager()
        self.data_io_manager.SetCacheManager(self.cache_manager)
        self.scene.SetCacheManager(self.cache_manager)
        self.scene.SetDataIOManager(self.data_io_manager)
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)  # adds the selection and interaction singletons
        self.app_logic.GetColorLogic().SetMRMLScene(self.scene)
        self.app_logic.SetSliceLogics(vtk.vtkCollection())
        self.app_logic.SetViewLogics(vtk.vtkCollection())
        self.logics = {}
        self.markups_logic = self._register("Markups", slicer.vtkSlicerMarkupsLogic())
        self.tables_logic = self._register("Tables", slicer.vtkSlicerTablesLogic())
        self.plots_logic = self._register("Plots", slicer.vtkSlicerPlotsLogic())
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene)

    def close(self) -> None:
        """Clear the scene and delete the temporary cache folder."""
        self.scene.Clear(True)
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    def _register(self, name: str, logic):
        logic.SetMRMLScene(self.scene)
        logic.SetMRMLApplicationLogic(self.app_logic)
        self.app_logic.SetModuleLogic(name, logic)
        self.logics[name] = logic
        return logic


def new_scene() -> HeadlessScene:
    """A new scene with application logic and the Markups, Tables and Plots logics."""
    return HeadlessScene()


def add_volume_from_array(scene, array, ijk_to_ras, name: str = "CT"):
    """A scalar volume node (with display node) holding a copy of ``array[k, j, i]``."""
    array = np.ascontiguousarray(array)
    image = vtk.vtkImageData()
    nk, nj, ni = array.shape
    image.SetDimensions(ni, nj, nk)
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(ijk_to_ras, dtype=float)))
    node.SetAndObserveImageData(image)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(1500.0, 300.0)  # a bone window
    return node


def _storable_nodes(scene) -> List[object]:
    nodes = scene.GetNodesByClass("vtkMRMLStorableNode")
    out = [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
    # Colour tables are the application's (not saved by Slicer either); hidden nodes are internal.
    return [n for n in out if n.GetSaveWithScene() and not n.GetHideFromEditors() and not n.IsA("vtkMRMLColorNode")]


def save_scene(scene, path: str) -> None:
    """Save ``scene`` as ``.mrml`` (data files written beside it) or as a ``.mrb`` bundle."""
    path = os.path.abspath(path)
    if path.lower().endswith(".mrb"):
        if not scene.WriteToMRB(path):
            raise OSError(f"Could not write the scene bundle {path}.")
        return
    folder = os.path.dirname(path)
    scene.SetRootDirectory(folder)
    used = set()
    for node in _storable_nodes(scene):
        storage = node.GetStorageNode()
        if storage is None:
            storage = node.CreateDefaultStorageNode()
            if storage is None:
                continue
            scene.AddNode(storage)
            storage.UnRegister(None)
            node.SetAndObserveStorageNodeID(storage.GetID())
        ext = storage.GetDefaultWriteFileExtension() or "dat"
        base = "".join(c if c.isalnum() or c in "-_" else "_" for c in (node.GetName() or node.GetID()))
        name = f"{base}.{ext}"
        k = 1
        while name in used:
            k += 1
            name = f"{base}_{k}.{ext}"
        used.add(name)
        storage.SetFileName(os.path.join(folder, name))
        if not storage.WriteData(node):
            raise OSError(f"Could not write {node.GetName()!r} to {storage.GetFileName()}.")
    scene.SetURL(path)
    if not scene.Commit(path):
        raise OSError(f"Could not write the scene file {path}.")


def load_scene(path: str, headless: Optional[HeadlessScene] = None) -> HeadlessScene:
    """Load a ``.mrml`` or ``.mrb`` file into a fresh scene (or into ``headless``)."""
    headless = headless or new_scene()
    path = os.path.abspath(path)
    if path.lower().endswith(".mrb"):
        ok = headless.scene.ReadFromMRB(path)
    else:
        headless.scene.SetURL(path)
        ok = headless.scene.Import()
    if not ok:
        raise OSError(f"Could not load the scene {path}.")
    return headless


def placed_points(pointsNode) -> List[dict]:
    """``[{"label", "ras"}]`` (world RAS) of a point list's placed control points, in order."""
    points = []
    for i in range(pointsNode.GetNumberOfControlPoints()):
        if pointsNode.GetNthControlPointPositionStatus(i) != pointsNode.PositionDefined:
            continue
        ras = [0.0, 0.0, 0.0]
        pointsNode.GetNthControlPointPositionWorld(i, ras)
        points.append({"label": pointsNode.GetNthControlPointLabel(i), "ras": ras})
    return points
