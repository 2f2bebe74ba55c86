"""``simulator``: the racing simulator as a ROS 2 node that looks to the stack like the vehicle.

Publishes the topics of docs/interfaces.md (LiDAR, camera, odometry, ground truth, latched /map
Paths, /clock) for each frame of a ``Simulation`` and drives the ego from /control/command (or lets
the privileged expert drive). Two clocks: ``realtime`` paces frames on the wall clock;
``lockstep`` publishes frame k and steps only once a command stamped with frame k's stamp arrived
(or ``lockstep_timeout`` passed, counted), so results do not depend on machine load. Frames are
never skipped. The simulation runs in its own thread; the executor only receives commands.
"""

from __future__ import annotations

import math
import threading
import time
import traceback

from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import OccupancyGrid, Odometry, Path
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2
from std_msgs.msg import Header

from racestack.errors import ParameterError
from racestack.grid import BevGrid, serialized_occupancy
from racestack.image import serialized_image
from racestack.node import RacestackNode, latched_qos, node_main, ns_to_stamp, result_qos, stamp_to_ns
from racestack.objects import boxes2d_to_cloud, objects_to_cloud
from racestack.params import Param
from racestack.pointcloud import array_to_cloud
from racestack.publishing import publish_serialized
from racestack.stats import RollingStats
from simulation.schema import ConfigError
from simulation.simulation import Simulation
from simulation.vehicles import Command

EPOCH_NS = 1_000_000_000  # sim time of frame 0: stamps must be > 0 (a zero stamp means "no stamp")
COMMAND_NAMES = ("steering_angle", "steering_rate", "speed", "acceleration")

PARAMS = (
    Param("scenario", "oval_pack", "Scenario name in config/scenarios (heldout/<name> too) or a YAML path."),
    Param("seed", -1, "Replaces the scenario's seed (-1 keeps it).", min=-1, max=2**31 - 1),
    Param("rate", 0.0, "Frame rate (Hz); 0 keeps the scenario's.", min=0.0, max=200.0),
    Param(
        "clock_mode",
        "realtime",
        "realtime: frames paced by the wall clock; lockstep: frame k+1 only after the command for frame k.",
        choices=("realtime", "lockstep"),
    ),
    Param("realtime_factor", 1.0, "realtime: simulated seconds per wall second.", min=0.01, max=100.0),
    Param(
        "lockstep_timeout",
        1.0,
        "lockstep: wall seconds to wait for a frame's command before stepping anyway (counted).",
        min=0.001,
        max=3600.0,
    ),
    Param(
        "lockstep_trigger",
        "lidar",
        "lockstep: which frames wait for a command: those with a LiDAR sweep (the stack's trigger) or every frame.",
        choices=("lidar", "frame"),
    ),
    Param(
        "startup_timeout",
        120.0,
        "lockstep: wall seconds frame 0 waits for the stack to subscribe, then for its first answer.",
        min=0.0,
        max=3600.0,
    ),
    Param(
        "lidar_subscribers",
        1,
        "lockstep: matched LiDAR subscribers frame 0 waits for (discovery under load takes seconds).",
        min=0,
        max=1000,
    ),
    Param(
        "camera_subscribers",
        0,
        "lockstep: matched camera image subscribers frame 0 waits for (the detector starts slowest).",
        min=0,
        max=1000,
    ),
    Param(
        "first_answer_timeout",
        20.0,
        "lockstep: wall seconds the first frame waits for its command (the stack's first inference is slow).",
        min=0.001,
        max=3600.0,
    ),
    Param(
        "drive",
        "expert",
        "Who drives the ego: the privileged expert, or /control/command.",
        choices=("expert", "command"),
    ),
    Param("command_topic", "/control/command", "Command input (JointState, docs/interfaces.md)."),
    Param(
        "command_timeout",
        0.5,
        "drive=command: a command older than this (sim s) is replaced by a braking fallback (counted).",
        min=0.0,
        max=60.0,
    ),
    Param("fallback_decel", 6.0, "Deceleration (m/s^2) of the fallback when commands stop.", min=0.0, max=50.0),
    Param("publish_lidar", True, "Publish /sensing/lidar/points."),
    Param("publish_camera", True, "Publish /sensing/camera/image_raw and camera_info."),
    Param("publish_ground_truth", True, "Publish /ground_truth/objects, flying_objects and camera/boxes."),
    Param("publish_bev_labels", True, "Publish /ground_truth/bev/segmentation on LiDAR frames."),
    Param("bev_cells", 256, "Cells per side of the ground-truth BEV grid (the perception grid).", min=8, max=4096),
    Param("bev_resolution", 0.4, "Cell size (m) of the ground-truth BEV grid.", min=0.01, max=10.0),
    Param(
        "duration",
        0.0,
        "Simulated seconds to run; 0 takes the scenario's, negative runs until stopped.",
        min=-1.0,
        max=1e7,
    ),
    Param("exit_at_end", False, "Shut the process down when the duration is reached."),
)


class SimulatorNode(RacestackNode):
    """Runs a Simulation in a thread and publishes each frame like a vehicle would."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._running = True
        self._thread: threading.Thread | None = None
        super().__init__("simulator", PARAMS)
        self.sim = self._make_simulation()
        self.grid = BevGrid.centered(self.p.bev_cells, self.p.bev_resolution)
        self.period_ns = round(1e9 / self.sim.scenario.rate)
        self.end_time = self.sim.scenario.duration if self.p.duration == 0 else self.p.duration
        self._commands: dict[int, Command] = {}
        self._latest: tuple[int, Command] | None = None
        self.finished = False
        self._wall_start = time.monotonic()
        self.step_ms = RollingStats(self.p.stats_window)
        self._make_publishers()
        self.create_subscription(JointState, self.p.command_topic, self._on_command, result_qos(20))
        self.add_diagnostics(self._diagnostics)
        self._publish_map()
        self._thread = threading.Thread(target=self._loop, name="simulation", daemon=True)
        self._thread.start()

    # -- set-up ------------------------------------------------------------------------------

    def _make_simulation(self) -> Simulation:
        overrides = {}
        if self.p.rate > 0:
            overrides["rate"] = self.p.rate
        try:
            return Simulation.from_scenario(self.p.scenario, seed=None if self.p.seed < 0 else self.p.seed, **overrides)
        except ConfigError as exc:
            raise ParameterError("scenario", str(exc)) from exc

    def _make_publishers(self) -> None:
        qos = result_qos()
        self.clock_pub = self.create_publisher(Clock, "/clock", result_qos(10))
        self.odom_pub = self.create_publisher(Odometry, "/localization/odometry", qos)
        self.lidar_pub = self.create_publisher(PointCloud2, "/sensing/lidar/points", result_qos(2))
        self.image_pub = self.create_publisher(Image, "/sensing/camera/image_raw", result_qos(2))
        self.info_pub = self.create_publisher(CameraInfo, "/sensing/camera/camera_info", qos)
        self.objects_pub = self.create_publisher(PointCloud2, "/ground_truth/objects", qos)
        self.flying_pub = self.create_publisher(PointCloud2, "/ground_truth/flying_objects", qos)
        self.boxes_pub = self.create_publisher(PointCloud2, "/ground_truth/camera/boxes", qos)
        self.bev_pub = self.create_publisher(OccupancyGrid, "/ground_truth/bev/segmentation", result_qos(2))
        self.map_pubs = {
            name: self.create_publisher(Path, f"/map/{name}", latched_qos())
            for name in ("centerline", "left_bound", "right_bound", "racing_line")
        }

    def _publish_map(self) -> None:
        """The track as latched Paths in ``map`` (closed polylines, end point not repeated)."""
        track = self.sim.track
        header = Header(stamp=ns_to_stamp(EPOCH_NS), frame_id="map")
        lines = {
            "centerline": track.centerline,
            "left_bound": track.left_bound,
            "right_bound": track.right_bound,
            "racing_line": track.racing_line,
        }
        for name, xy in lines.items():
            self.map_pubs[name].publish(_path(xy, header))

    # -- commands ----------------------------------------------------------------------------

    def _on_command(self, msg: JointState) -> None:
        values = dict(zip(msg.name, msg.position, strict=False))
        missing = [n for n in ("steering_angle", "acceleration") if n not in values]
        if missing:
            self.reject("missing_field", f"command lacks {', '.join(missing)}", self.p.command_topic)
            return
        numbers = [values[n] for n in COMMAND_NAMES if n in values]
        if not all(math.isfinite(v) for v in numbers):
            self.reject("nan", "command has non-finite values", self.p.command_topic)
            return
        command = Command(
            steering_angle=float(values["steering_angle"]),
            acceleration=float(values["acceleration"]),
            speed=float(values["speed"]) if "speed" in values else None,
            steering_rate=float(values["steering_rate"]) if "steering_rate" in values else None,
        )
        stamp = stamp_to_ns(msg.header.stamp)
        with self._condition:
            self._commands[stamp] = command
            if len(self._commands) > 64:
                del self._commands[min(self._commands)]
            if self._latest is None or stamp >= self._latest[0]:
                self._latest = (stamp, command)
            self._condition.notify_all()

    def _wait_for_command(self, stamp_ns: int, timeout_s: float) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: stamp_ns in self._commands or not self._running, timeout_s)

    def _command_for(self, stamp_ns: int) -> Command | None:
        """The ego's command for the frame at ``stamp_ns`` (None: the expert drives)."""
        if self.p.drive == "expert":
            return None
        with self._condition:
            latest = self._latest
        if latest is None or (stamp_ns - latest[0]) / 1e9 > self.p.command_timeout or latest[0] > stamp_ns:
            self.count("command_fallbacks")
            return Command(steering_angle=self.sim.ego.steer, acceleration=-self.p.fallback_decel)
        return latest[1]

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while self._running and not self.finished:
                self._run_frame()
        except Exception:  # a crashed simulation must stop the process, not leave a silent node
            if not self.context.ok():
                return  # Ctrl-C shut the context down while a frame was being published
            self.get_logger().error(f"simulation failed:\n{traceback.format_exc()}")
            self.context.try_shutdown()

    def _run_frame(self) -> None:
        sim = self.sim
        stamp_ns = EPOCH_NS + sim.frame * self.period_ns
        lockstep = self.p.clock_mode == "lockstep"
        if lockstep and sim.frame == 0:
            self._wait_for_stack()
        with self.frame():
            messages, triggered = self._frame_messages(stamp_ns)
        self._publish(messages)
        if lockstep and (triggered or self.p.lockstep_trigger == "frame"):
            first = self._latest is None
            if not self._wait_for_command(stamp_ns, self.p.first_answer_timeout if first else self.p.lockstep_timeout):
                self.count("lockstep_timeouts")
        command = self._command_for(stamp_ns)
        started = time.perf_counter()
        sim.step_frame(command)
        self.step_ms.add((time.perf_counter() - started) * 1e3)
        if 0 <= self.end_time <= sim.time + 1e-9:
            self._finish()
        elif self.p.clock_mode == "realtime":
            self._pace()

    def _wait_for_stack(self) -> None:
        """Lockstep start: hold frame 0 until the stack listens to the LiDAR and publishes commands
        (up to ``startup_timeout``), so the first frame is not lost; its answer may then take as
        long as the stack's first inference (``first_answer_timeout``)."""
        deadline = time.monotonic() + self.p.startup_timeout
        while self._running and time.monotonic() < deadline:
            if self._stack_listening() and self.count_publishers(self.p.command_topic) > 0:
                time.sleep(0.5)  # let the other subscribers of the stack match too
                return
            time.sleep(0.1)
        self.get_logger().warning(
            f"lockstep: after {self.p.startup_timeout:.0f} s, {self.lidar_pub.get_subscription_count()} of "
            f"{self.p.lidar_subscribers} LiDAR and {self.image_pub.get_subscription_count()} of "
            f"{self.p.camera_subscribers} camera subscribers matched, command publishers "
            f"{self.count_publishers(self.p.command_topic)}; starting anyway"
        )

    def _stack_listening(self) -> bool:
        lidar = self.lidar_pub.get_subscription_count() >= self.p.lidar_subscribers or not self.p.publish_lidar
        camera = self.image_pub.get_subscription_count() >= self.p.camera_subscribers or not self.p.publish_camera
        return lidar and camera

    def _pace(self) -> None:
        due = self._wall_start + self.sim.time / self.p.realtime_factor
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -self.sim.scenario.rate**-1:
            self.count("late_frames")

    def _finish(self) -> None:
        self.finished = True
        events = self.sim.events
        self.get_logger().info(
            f"scenario finished at {self.sim.time:.2f} s: {events.laps} laps {events.lap_times}, "
            f"{events.collisions} collisions, {events.track_limit_violations} track-limit violations"
        )
        if self.p.exit_at_end:
            self.publish_diagnostics()
            self.context.try_shutdown()

    # -- publishing --------------------------------------------------------------------------

    def _frame_messages(self, stamp_ns: int) -> tuple[list, bool]:
        """(publisher, message) pairs of the current frame, /clock first; and whether a LiDAR sweep is in."""
        sim = self.sim
        stamp = ns_to_stamp(stamp_ns)
        messages = [(self.clock_pub, Clock(clock=stamp)), (self.odom_pub, self._odometry(stamp))]
        lidar = self.p.publish_lidar and sim.lidar_due()
        if lidar:
            sweep = sim.lidar_sweep()
            messages.append((self.lidar_pub, array_to_cloud(sweep.points, Header(stamp=stamp, frame_id="lidar"))))
        if self.p.publish_bev_labels and (lidar or sim.sensors.lidar is None):
            labels = sim.bev_labels(self.grid)
            grid_msg = serialized_occupancy(labels, self.grid, Header(stamp=stamp, frame_id="base_link"))
            messages.append((self.bev_pub, grid_msg))
        if self.p.publish_ground_truth:
            in_map = Header(stamp=stamp, frame_id="map")
            messages.append((self.objects_pub, objects_to_cloud(sim.objects_table(), in_map)))
            messages.append((self.flying_pub, objects_to_cloud(sim.flying_objects_table(), in_map)))
        if self.p.publish_camera and sim.camera_due():
            frame = sim.camera_frame()
            header = Header(stamp=stamp, frame_id="camera_optical")
            messages.append((self.image_pub, serialized_image(frame.image, "rgb8", header)))
            messages.append((self.info_pub, sim.sensors.camera.info(header)))
            if self.p.publish_ground_truth:
                messages.append((self.boxes_pub, boxes2d_to_cloud(frame.boxes, header)))
        return messages, lidar

    @staticmethod
    def _publish(messages: list) -> None:
        for publisher, msg in messages:
            if isinstance(msg, bytes):
                publish_serialized(publisher, msg)
            else:
                publisher.publish(msg)

    def _odometry(self, stamp) -> Odometry:
        odom = self.sim.odometry()
        noise = self.sim.scenario.noise
        msg = Odometry()
        msg.header = Header(stamp=stamp, frame_id="map")
        msg.child_frame_id = "base_link"
        pose = msg.pose.pose
        pose.position.x, pose.position.y = odom.x, odom.y
        pose.orientation.z, pose.orientation.w = math.sin(odom.yaw / 2.0), math.cos(odom.yaw / 2.0)
        covariance = [0.0] * 36
        covariance[0] = covariance[7] = noise.position**2
        covariance[35] = noise.yaw**2
        msg.pose.covariance = covariance
        msg.twist.twist.linear.x = odom.v
        msg.twist.twist.angular.z = odom.yaw_rate
        twist_covariance = [0.0] * 36
        twist_covariance[0] = noise.speed**2
        msg.twist.covariance = twist_covariance
        return msg

    def _diagnostics(self) -> dict[str, str]:
        sim, events = self.sim, self.sim.events
        wall = max(time.monotonic() - self._wall_start, 1e-9)
        values = {
            "scenario": sim.scenario.name,
            "clock_mode": self.p.clock_mode,
            "drive": self.p.drive,
            "sim_frames": str(sim.frame),
            "sim_time": f"{sim.time:.3f}",
            "frames_per_wall_s": f"{sim.frame / wall:.2f}",
            "laps": str(events.laps),
            "lap_times": " ".join(f"{t:.2f}" for t in events.lap_times),
            "collisions": str(events.collisions),
            "track_limit_violations": str(events.track_limit_violations),
            "finished": str(self.finished).lower(),
        }
        for key, value in self.step_ms.summary().items():
            if key != "n":
                values[f"step_ms_{key}"] = f"{value:.3f}"
        for key in ("lockstep_timeouts", "command_fallbacks", "late_frames"):
            values.setdefault(key, str(self.monitor.counters.get(key, 0)))
        return values

    def destroy_node(self) -> None:
        with self._condition:
            self._running = False
            self._condition.notify_all()
        thread = self._thread
        if thread is not None and thread.is_alive() and threading.current_thread() is not thread:
            thread.join(timeout=5.0)
        super().destroy_node()


def _path(xy, header: Header) -> Path:
    msg = Path(header=header)
    heading = [math.atan2(b[1] - a[1], b[0] - a[0]) for a, b in zip(xy, [*xy[1:], xy[0]], strict=True)]
    for (x, y), yaw in zip(xy, heading, strict=True):
        pose = PoseStamped(header=header)
        pose.pose.position.x, pose.pose.position.y = float(x), float(y)
        pose.pose.orientation.z, pose.pose.orientation.w = math.sin(yaw / 2.0), math.cos(yaw / 2.0)
        msg.poses.append(pose)
    return msg


main = node_main(SimulatorNode)
