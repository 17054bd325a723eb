"""An offscreen slice view with Slicer's real displayable managers, for scripts and headless tests.

Inside 3D Slicer the views are Qt widgets. Outside it (``slicer-core`` wheel, no Qt) this builds
what a Slicer slice view is made of, the way ``trame-slicer`` does: an offscreen
``vtkRenderWindow`` (VTK picks EGL or OSMesa when there is no X display), a
``vtkMRMLSliceLogic`` with its slice node, the slice view displayable managers (markups, model
slice intersections, crosshair) in a ``vtkMRMLDisplayableManagerGroup``, and a
``vtkMRMLSliceViewInteractorStyle`` that turns interactor events into the same interactions a
mouse makes in Slicer (placing points in place mode, dragging markups handles). The slice image
itself is drawn with a ``vtkImageMapper`` from the slice logic's output, as Slicer's
``vtkLightBoxRendererManager`` does.

Coordinates: :meth:`OffscreenSliceView.xy_of` converts RAS to the view's pixel coordinates
(origin bottom-left), so events can be sent at the position of a world point.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import slicer
import vtk
from vtk.util.numpy_support import numpy_to_vtk, vtk_to_numpy

__all__ = ["OffscreenSliceView"]

DISPLAYABLE_MANAGERS = (
    "vtkMRMLCrosshairDisplayableManager",
    "vtkMRMLModelSliceDisplayableManager",
    "vtkMRMLMarkupsDisplayableManager",
)


class OffscreenSliceView:
    """A slice view (default axial, "Red") of ``headless`` (``scene.HeadlessScene``)."""

    def __init__(self, headless, name: str = "Red", size: Tuple[int, int] = (400, 400), orientation: str = "Axial"):
        self.headless = headless
        self.scene = headless.scene
        self.size = (int(size[0]), int(size[1]))
        self.render_window = vtk.vtkRenderWindow()
        self.render_window.SetOffScreenRendering(1)
        self.render_window.SetSize(*self.size)
        self.renderer = vtk.vtkRenderer()
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.render_window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.render_window)
        self.interactor.Initialize()

        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        factory.SetMRMLApplicationLogic(headless.app_logic)
        for manager in DISPLAYABLE_MANAGERS:
            if not factory.IsDisplayableManagerRegistered(manager):
                factory.RegisterDisplayableManager(manager)
        self.managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers.Initialize(factory, self.renderer)

        self.slice_logic = slicer.vtkMRMLSliceLogic()
        self.slice_logic.SetMRMLApplicationLogic(headless.app_logic)
        headless.app_logic.GetSliceLogics().AddItem(self.slice_logic)
        self.slice_logic.SetMRMLScene(self.scene)
        self.slice_node = self.slice_logic.AddSliceNode(name)
        self.slice_node.SetOrientation(orientation)
        self.managers.SetMRMLDisplayableNode(self.slice_node)

        self.style = slicer.vtkMRMLSliceViewInteractorStyle()
        self.style.SetSliceLogic(self.slice_logic)
        self.style.SetDisplayableManagers(self.managers)
        self.interactor.SetInteractorStyle(vtk.vtkInteractorStyleUser())
        self.style.SetInteractor(self.interactor)

        self.image_mapper = vtk.vtkImageMapper()  # the slice logic's output is RGBA 0..255
        self.image_mapper.SetColorWindow(255.0)
        self.image_mapper.SetColorLevel(127.5)
        self.image_actor = vtk.vtkActor2D()
        self.image_actor.SetMapper(self.image_mapper)
        self.image_actor.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(self.image_actor)
        self.slice_logic.ResizeSliceNode(*self.size)

    # --- content ------------------------------------------------------------------------------
    def show_volume(self, volume_node, center_ras: Sequence[float] = None, field_of_view_mm: float = None) -> None:
        """Show ``volume_node`` as background, centred on ``center_ras`` with the given field of view."""
        self.slice_logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume_node.GetID())
        self.slice_logic.FitSliceToBackground()
        if field_of_view_mm:
            aspect = self.size[1] / self.size[0]
            self.slice_node.SetFieldOfView(field_of_view_mm, field_of_view_mm * aspect, 1.0)
        if center_ras is not None:
            self.slice_node.JumpSliceByCentering(*[float(x) for x in center_ras])
        self.image_mapper.SetInputConnection(self.slice_logic.GetImageDataConnection())
        self.render()

    def render(self) -> None:
        self.render_window.Render()

    # --- coordinates and events ---------------------------------------------------------------
    def xy_of(self, ras: Sequence[float]) -> Tuple[float, float]:
        """View pixel coordinates (origin bottom-left) of a RAS point on the slice plane."""
        m = vtk.vtkMatrix4x4()
        m.DeepCopy(self.slice_node.GetXYToRAS())
        m.Invert()
        x, y, _z, _w = m.MultiplyPoint([float(v) for v in ras] + [1.0])
        return x, y

    def ras_of(self, xy: Sequence[float]) -> np.ndarray:
        xyz = self.slice_node.GetXYToRAS().MultiplyPoint([float(xy[0]), float(xy[1]), 0.0, 1.0])
        return np.asarray(xyz[:3])

    def _event(self, xy, event) -> None:
        self.interactor.SetEventPosition(int(round(xy[0])), int(round(xy[1])))
        self.interactor.InvokeEvent(event)

    def click(self, ras: Sequence[float]) -> None:
        """A left click at the view position of ``ras`` (moves there first, as a mouse does)."""
        xy = self.xy_of(ras)
        self._event(xy, vtk.vtkCommand.MouseMoveEvent)
        self._event(xy, vtk.vtkCommand.LeftButtonPressEvent)
        self._event(xy, vtk.vtkCommand.LeftButtonReleaseEvent)

    def drag(self, from_ras: Sequence[float], to_ras: Sequence[float], steps: int = 5) -> None:
        """Press the left button at ``from_ras``, move in ``steps`` to ``to_ras``, release."""
        a, b = np.asarray(self.xy_of(from_ras)), np.asarray(self.xy_of(to_ras))
        self._event(a, vtk.vtkCommand.MouseMoveEvent)  # hover: the widget under the mouse becomes active
        self.render()
        self._event(a, vtk.vtkCommand.LeftButtonPressEvent)
        for k in range(1, steps + 1):
            self._event(a + (b - a) * k / steps, vtk.vtkCommand.MouseMoveEvent)
        self._event(b, vtk.vtkCommand.LeftButtonReleaseEvent)

    # --- pixels -------------------------------------------------------------------------------
    def capture(self) -> np.ndarray:
        """The rendered view as an RGB array [row, column, 3] (row 0 at the top)."""
        self.render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(self.render_window)
        grab.ReadFrontBufferOff()
        grab.Update()
        image = grab.GetOutput()
        w, h, _ = image.GetDimensions()
        rgb = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, -1)[:, :, :3]
        return rgb[::-1].copy()

    def save_png(self, path: str) -> np.ndarray:
        """Render, write a PNG and return the pixels."""
        rgb = self.capture()
        image = vtk.vtkImageData()
        h, w, _ = rgb.shape
        image.SetDimensions(w, h, 1)
        image.GetPointData().SetScalars(numpy_to_vtk(rgb[::-1].reshape(-1, 3), deep=True))
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(str(path))
        writer.SetInputData(image)
        writer.Write()
        return rgb

    def close(self) -> None:
        self.managers.SetMRMLDisplayableNode(None)
        self.headless.app_logic.GetSliceLogics().RemoveItem(self.slice_logic)
        self.slice_logic.SetMRMLScene(None)
        self.render_window.Finalize()
