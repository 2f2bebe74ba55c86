"""``mpc_planner``: the learning-based MPC as a ROS 2 node (thin: messages <-> MpcPlanner).

Each frame (the ``trigger`` input: the risk map, the tracked objects or the odometry) is answered
with a ``nav_msgs/Path`` on /planning/trajectory and a JointState command on /control/command, both
stamped with the frame's stamp. With ``use_risk_map`` false it is the "MPC without risk map"
baseline (opponents as soft constraints only). Fallbacks are counted in /diagnostics.
"""

from __future__ import annotations

from pathlib import Path as FilePath

import yaml
from nav_msgs.msg import Path
from sensor_msgs.msg import Image, JointState

from planning_nodes.messages import command_message, image_to_risk, plan_to_path
from planning_nodes.mpc.planner import MpcPlanner, PlannerConfig
from planning_nodes.mpc.problem import SOLVERS, CostWeights
from planning_nodes.mpc.risk_field import RiskField
from planning_nodes.node_common import INPUT_PARAMS, PlannerInputs
from planning_nodes.riskmap.geometry import RISK_GRID, RISK_TIMES
from racestack.errors import InputError, ModelFileError
from racestack.node import RacestackNode, node_main, result_qos, stamp_to_ns
from racestack.params import Param
from racestack.paths import resolve_share_path
from simulation.track import Track
from simulation.vehicles import VehicleParams

TRIGGERS = ("auto", "risk_map", "objects", "odometry")
DEFAULT_WEIGHTS = "models/mpc_weights/weights.yaml"


def load_weights(path: str) -> CostWeights:
    """Cost weights from a YAML file with a ``weights`` mapping (names of CostWeights); '' = defaults."""
    if not path:
        return CostWeights()
    try:
        resolved = resolve_share_path(path)
        data = yaml.safe_load(FilePath(resolved).read_text())
        values = data["weights"]
        unknown = sorted(set(values) - set(CostWeights.names()))
        if unknown:
            raise ValueError(f"unknown weight(s) {unknown}")
        return CostWeights(**{k: float(v) for k, v in values.items()})
    except (FileNotFoundError, OSError) as exc:
        raise ModelFileError(path, "MPC weights file does not exist or is unreadable") from exc
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path, f"not an MPC weights file: {exc}") from exc


class MpcPlannerNode(RacestackNode, PlannerInputs):
    def __init__(self) -> None:
        super().__init__(
            "mpc_planner",
            [
                *INPUT_PARAMS,
                Param("use_risk_map", True, "Add the risk map's cost (false: the MPC-without-risk-map baseline)."),
                Param("risk_map_topic", "/planning/risk_map", "Risk map (Image 32FC7 on the risk grid, base_link)."),
                Param("trigger", "auto", "Input whose arrival starts a cycle (auto: risk_map or objects).", TRIGGERS),
                Param("trajectory_topic", "/planning/trajectory", "Planned trajectory (Path, map)."),
                Param("command_topic", "/control/command", "Command (JointState, see docs/interfaces.md)."),
                Param("weights_file", DEFAULT_WEIGHTS, "Learned cost weights (YAML); empty: built-in defaults."),
                Param("horizon", 30, "MPC steps.", min=5, max=100),
                Param("dt", 0.1, "MPC step (s).", min=0.02, max=0.5),
                Param("solver", "OSQP", "QP solver.", SOLVERS),
                Param("max_iterations", 1, "SCP iterations per warm cycle (1: real-time iteration).", min=1, max=10),
                Param("time_limit_ms", 8.0, "Budget of a cycle's solves; then the last good iterate.", min=1.0),
                Param("command_lead", 0.05, "The command's steering/speed are the plan's this far ahead (s).", min=0.0),
                Param("opponent_slots", 4, "Opponents constrained per cycle (nearest first).", min=0, max=12),
                Param("lateral_margin", 0.9, "Lateral gap kept to opponents (m).", min=0.0),
                Param("bound_margin", 0.45, "Gap kept to the barriers beyond half the car width (m).", min=0.0),
            ],
        )
        weights = load_weights(self.p.weights_file)
        self.vehicle = VehicleParams()
        self.config = PlannerConfig(
            horizon=self.p.horizon,
            dt=self.p.dt,
            opponent_slots=self.p.opponent_slots,
            solver=self.p.solver,
            max_iterations=self.p.max_iterations,
            time_limit_s=self.p.time_limit_ms / 1e3,
            use_risk_map=self.p.use_risk_map,
            lateral_margin=self.p.lateral_margin,
            bound_margin=self.p.bound_margin,
            weights=weights,
        )
        self.planner: MpcPlanner | None = None
        self.risk: tuple[int, RiskField] | None = None
        self.last_info: dict = {}
        trigger = self.p.trigger
        if trigger == "auto":
            trigger = "risk_map" if self.p.use_risk_map else "objects"
        self.trigger = trigger
        self.path_pub = self.create_publisher(Path, self.p.trajectory_topic, result_qos())
        self.command_pub = self.create_publisher(JointState, self.p.command_topic, result_qos())
        self.setup_inputs(self._on_track, self._on_frame, trigger)
        if self.p.use_risk_map or trigger == "risk_map":
            self.create_subscription(Image, self.p.risk_map_topic, self._on_risk, result_qos(2))
        self.add_diagnostics(self._diagnostics)
        self.get_logger().info(f"mpc_planner: trigger {trigger}, risk map {self.p.use_risk_map}, weights {weights}")

    def _on_track(self, track: Track) -> None:
        self.planner = MpcPlanner(track, self.vehicle, self.config)

    def _on_risk(self, msg: Image) -> None:
        if not self.accept_stamp("risk_map", msg.header.stamp):
            return
        try:
            values = image_to_risk(msg)
        except InputError as exc:
            self.reject_error(exc, self.p.risk_map_topic)
            return
        field = RiskField(values, RISK_GRID, RISK_TIMES, self.vehicle.length, self.vehicle.width)
        self.risk = (stamp_to_ns(msg.header.stamp), field)
        if self.trigger == "risk_map":
            self._on_frame(msg.header.stamp)

    def _on_frame(self, stamp) -> None:
        if self.planner is None:
            self.reject("no_track", "no track yet (track_file or the latched /map paths)")
            return
        stamp_ns = stamp_to_ns(stamp)
        with self.frame(stamp):
            ego = self.ego_at(stamp_ns)
            if ego is None:
                return
            risk = None
            if self.p.use_risk_map:
                if self.risk is not None and abs(self.risk[0] - stamp_ns) <= self.p.odometry_tolerance * 1e9:
                    risk = self.risk[1]
                else:
                    self.count("risk_map_missing")
            plan = self.planner.plan(ego, self.objects_at(stamp_ns), risk, stamp_ns / 1e9)
            self.last_info = plan.info
            self.path_pub.publish(plan_to_path(plan, stamp))
            self.command_pub.publish(command_message(plan.command(self.p.command_lead), stamp))

    def _diagnostics(self) -> dict[str, str]:
        values = {"solver": self.p.solver, "use_risk_map": str(self.p.use_risk_map), "trigger": self.trigger}
        if self.planner is not None:
            values.update({k: str(v) for k, v in sorted(self.planner.counts.items())})
            values["fallbacks"] = str(sum(v for k, v in self.planner.counts.items() if k.startswith("fallback_")))
        for key in ("status", "verdict", "iterations", "cycle_ms", "cost"):
            if key in self.last_info:
                values[f"last_{key}"] = str(self.last_info[key])
        return values


main = node_main(MpcPlannerNode)
