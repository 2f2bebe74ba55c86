"""``risk_map``: publishes the spatiotemporal risk map for each tracked-objects frame.

Inputs: tracked objects (``map``), odometry (the ego pose at the frame's stamp), the BEV
segmentation (context; optional, zeros without it) and the track (file or latched /map Paths).
Output: ``/planning/risk_map``, Image ``32FC7`` on the risk grid in ``base_link`` at the objects'
stamp (see docs/interfaces.md for the grid and the cell meaning).
"""

from __future__ import annotations

from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from planning_nodes.messages import serialized_risk
from planning_nodes.node_common import INPUT_PARAMS, PlannerInputs
from planning_nodes.riskmap.model import RISKMAP_SPEC
from planning_nodes.riskmap.predictor import RiskPredictor
from racestack.errors import InputError
from racestack.grid import BevGrid, occupancy_to_grid
from racestack.inference import BACKENDS, create_runner
from racestack.node import RacestackNode, node_main, result_qos, stamp_to_ns
from racestack.params import Param
from racestack.paths import models_dir
from racestack.publishing import publish_serialized
from simulation.track import Track
from simulation.vehicles import VehicleParams

DEFAULT_CHECKPOINT = str(models_dir() / "riskmap" / "riskmap.pt")


class RiskMapNode(RacestackNode, PlannerInputs):
    def __init__(self) -> None:
        super().__init__(
            "risk_map",
            [
                *INPUT_PARAMS,
                Param("segmentation_topic", "/perception/bev/segmentation", "BEV classes (context); optional."),
                Param("output_topic", "/planning/risk_map", "Risk map (Image 32FC7, base_link)."),
                Param("checkpoint", DEFAULT_CHECKPOINT, "Risk-map network checkpoint (.pt)."),
                Param("backend", "auto", "Inference backend.", BACKENDS),
                Param("device", "cpu", "cpu or cuda[:N]."),
                Param("segmentation_tolerance", 0.15, "Largest age (s) of the segmentation used as context.", min=0.0),
            ],
        )
        self.vehicle = VehicleParams()
        self.runner = create_runner(
            RISKMAP_SPEC, self.p.checkpoint, self.p.backend, self.p.device, log=self.get_logger().info
        )
        self.predictor: RiskPredictor | None = None
        self.segmentation: tuple[int, object, BevGrid] | None = None
        self.pub = self.create_publisher(Image, self.p.output_topic, result_qos(2))
        self.create_subscription(OccupancyGrid, self.p.segmentation_topic, self._on_segmentation, result_qos(2))
        self.setup_inputs(self._on_track, self._on_frame, "objects")
        self.add_diagnostics(lambda: {"backend": self.runner.backend})

    def _on_track(self, track: Track) -> None:
        self.predictor = RiskPredictor(self.runner, track)

    def _on_segmentation(self, msg: OccupancyGrid) -> None:
        try:
            labels, grid = occupancy_to_grid(msg)
        except InputError as exc:
            self.reject_error(exc, self.p.segmentation_topic)
            return
        self.segmentation = (stamp_to_ns(msg.header.stamp), labels.copy(), grid)

    def _on_frame(self, stamp) -> None:
        if self.predictor is None:
            self.reject("no_track", "no track yet (track_file or the latched /map paths)")
            return
        stamp_ns = stamp_to_ns(stamp)
        with self.frame(stamp):
            ego = self.ego_at(stamp_ns)
            if ego is None:
                return
            labels, grid = None, None
            tolerance_ns = self.p.segmentation_tolerance * 1e9
            if self.segmentation is not None and abs(self.segmentation[0] - stamp_ns) <= tolerance_ns:
                _, labels, grid = self.segmentation
            else:
                self.count("segmentation_missing")
            values = self.predictor.predict(
                self.objects_at(stamp_ns),
                (ego.x, ego.y, ego.yaw),
                ego.v,
                ego.steer,
                ego.accel,
                stamp_ns / 1e9,
                labels,
                grid,
            )
            publish_serialized(self.pub, serialized_risk(values, Header(stamp=stamp, frame_id="base_link")))


main = node_main(RiskMapNode)
