"""``pure_pursuit``: the pure-pursuit baseline with the MPC's contract (Path + JointState per frame)."""

from __future__ import annotations

from nav_msgs.msg import Path
from sensor_msgs.msg import JointState

from planning_nodes.messages import command_message, plan_to_path
from planning_nodes.node_common import INPUT_PARAMS, PlannerInputs
from planning_nodes.pure_pursuit import PurePursuit, PursuitConfig
from racestack.node import RacestackNode, node_main, result_qos, stamp_to_ns
from racestack.params import Param
from simulation.track import Track
from simulation.vehicles import VehicleParams


class PurePursuitNode(RacestackNode, PlannerInputs):
    def __init__(self) -> None:
        super().__init__(
            "pure_pursuit",
            [
                *INPUT_PARAMS,
                Param("trigger", "objects", "Input whose arrival starts a cycle.", ("objects", "odometry")),
                Param("trajectory_topic", "/planning/trajectory", "Planned trajectory (Path, map)."),
                Param("command_topic", "/control/command", "Command (JointState, see docs/interfaces.md)."),
                Param("lookahead_time", 0.6, "Look-ahead distance per m/s of speed (s).", min=0.05, max=5.0),
                Param("min_lookahead", 8.0, "Shortest look-ahead (m).", min=1.0, max=100.0),
                Param("time_gap", 0.6, "Time gap kept to the car ahead on the line (s).", min=0.0, max=5.0),
                Param("command_lead", 0.05, "The command's steering/speed are the plan's this far ahead (s).", min=0.0),
            ],
        )
        self.vehicle = VehicleParams()
        self.config = PursuitConfig(
            lookahead_time=self.p.lookahead_time, min_lookahead=self.p.min_lookahead, time_gap=self.p.time_gap
        )
        self.pursuit: PurePursuit | None = None
        self.path_pub = self.create_publisher(Path, self.p.trajectory_topic, result_qos())
        self.command_pub = self.create_publisher(JointState, self.p.command_topic, result_qos())
        self.setup_inputs(self._on_track, self._on_frame, self.p.trigger)

    def _on_track(self, track: Track) -> None:
        self.pursuit = PurePursuit(track, self.vehicle, self.config)

    def _on_frame(self, stamp) -> None:
        if self.pursuit is None:
            self.reject("no_track", "no track yet (track_file or the latched /map paths)")
            return
        stamp_ns = stamp_to_ns(stamp)
        with self.frame(stamp):
            ego = self.ego_at(stamp_ns)
            if ego is None:
                return
            plan = self.pursuit.plan(ego, self.objects_at(stamp_ns), stamp_ns / 1e9)
            self.path_pub.publish(plan_to_path(plan, stamp))
            self.command_pub.publish(command_message(plan.command(self.p.command_lead), stamp))


main = node_main(PurePursuitNode)
