"""Simulated LiDAR, camera and flying objects: geometry, labels, boxes, determinism, scenario errors.

Real Open3D ray casting against the real world meshes of real tracks; no mocks.
"""

from __future__ import annotations

import numpy as np
import pytest

from racestack.objects import BOX2D_DTYPE, CLASS_ID, OBJECT_DTYPE
from racestack.transforms import camera_optical_matrix, planar_pose_matrix, pose_matrix, transform_points
from simulation.flying_objects import FLYING_INSTANCE_BASE, FlyingConfig, FlyingObjects
from simulation.lidar import POINT_DTYPE
from simulation.meshes import SEMANTIC_ID
from simulation.schema import ConfigError
from simulation.simulation import Simulation

SMALL_LIDAR = {"beams": 48, "vertical_fov": [-25.0, 10.0], "columns": 720}
START = (0.7, -250.0)  # the oval's start line (s = 0), heading +x; the ego's box centre starts there


def at(forward: float, left: float, up: float) -> list[float]:
    """A map position relative to the start line."""
    return [START[0] + forward, START[1] + left, up]


def make_sim(**sections) -> Simulation:
    """A 2.4 km oval, ego on the centre line of the front straight at 20 m/s."""
    scenario = {
        "name": "sensors_test",
        "seed": 7,
        "track": {"type": "oval", "width": 14.0},
        "ego": {"start_s": 0.0, "lane": 0.0, "speed": 20.0},
        "flying_objects": {"count": 0},
    }
    scenario.update(sections)
    return Simulation.from_scenario(scenario)


def to_map(sim: Simulation, points: np.ndarray) -> np.ndarray:
    lidar_in_map = planar_pose_matrix(*sim.ego_pose) @ pose_matrix(sim.sensors.lidar.pose)
    xyz = np.column_stack([points["x"], points["y"], points["z"]]).astype(np.float64)
    return transform_points(lidar_in_map, xyz)


def test_wall_at_known_distance_within_the_range_noise():
    noise = 0.02
    sim = make_sim(sensors={"lidar": {**SMALL_LIDAR, "range_noise": noise, "dropout": 0.0}})
    sweep = sim.lidar_sweep()
    assert sweep.points.dtype == POINT_DTYPE and len(sweep) > 10000
    points = sweep.points
    # Left wall face: 7 m left of the centre line, 1 m high; the lidar sits on the centre line.
    wall = (sweep.semantic == SEMANTIC_ID["barrier"]) & (points["y"] > 0) & (np.abs(points["x"]) < 3.0)
    wall &= points["z"] < -0.25  # below the wall top (lidar at 1.2 m, wall 1.0 m)
    assert wall.sum() > 20
    lateral = points["y"][wall]
    assert np.abs(lateral - 7.0).max() < 5 * noise
    assert abs(float(np.mean(lateral)) - 7.0) < noise
    ring = points["ring"][wall]
    assert ring.max() < 48 and (np.diff(np.sort(np.unique(ring))) >= 1).all()


def test_noise_free_ranges_are_exact_and_ground_is_where_it_should_be():
    sim = make_sim(sensors={"lidar": {**SMALL_LIDAR, "range_noise": 0.0, "dropout": 0.0, "intensity_noise": 0.0}})
    sweep = sim.lidar_sweep()
    in_map = to_map(sim, sweep.points)
    track = sweep.semantic == SEMANTIC_ID["track"]
    assert np.abs(in_map[track, 2]).max() < 6e-3  # the track is the plane z = 0 (start line: 5 mm paint)
    wall = (sweep.semantic == SEMANTIC_ID["barrier"]) & (sweep.points["y"] > 0) & (np.abs(sweep.points["x"]) < 3.0)
    assert np.abs(sweep.points["y"][wall] - 7.0).max() < 2e-3
    intensity = sweep.points["intensity"]
    assert ((intensity >= 0) & (intensity <= 1)).all()
    # The white edge lines (last 0.3 m before each wall) reflect far more than the asphalt.
    lateral = np.abs(sweep.points["y"])
    paint = track & (lateral > 6.75) & (lateral < 6.95)
    asphalt = track & (lateral < 6.0)
    assert paint.sum() > 10 and np.median(intensity[paint]) > 3 * np.median(intensity[asphalt])


def test_points_on_a_car_carry_its_class_and_instance_and_lie_in_its_box():
    sim = make_sim(
        sensors={"lidar": {**SMALL_LIDAR, "range_noise": 0.01, "dropout": 0.0}},
        opponents=[{"gap": 15.0, "lane": 0.0, "speed": 20.0}, {"gap": 30.0, "lane": 3.5, "speed": 20.0}],
    )
    sweep = sim.lidar_sweep()
    table = sim.objects_table()
    in_map = to_map(sim, sweep.points)
    for row in table:
        mine = sweep.instance == row["track_id"]
        assert mine.sum() > 10, f"car {row['track_id']} barely seen"
        assert (sweep.semantic[mine] == SEMANTIC_ID["vehicle"]).all()
        local = transform_points(
            np.linalg.inv(pose_matrix([row["x"], row["y"], row["z"], 0, 0, row["yaw"]])), in_map[mine]
        )
        half = np.array([row["length"], row["width"], row["height"]]) / 2.0 + 0.05
        assert (np.abs(local) <= half).all()
    assert set(np.unique(sweep.instance[sweep.semantic == SEMANTIC_ID["vehicle"]])) == set(table["track_id"])


def test_drone_seen_by_lidar_and_camera_with_a_box_enclosing_its_projection():
    drone = {"class": "drone", "position": at(20.0, 1.0, 3.0), "motion": "hover", "size": 1.0}
    dense = {"beams": 64, "vertical_fov": [-5.0, 10.0], "columns": 1024}  # a drone is ~15 cm thick
    sim = make_sim(sensors={"lidar": dense}, flying_objects={"count": 0, "objects": [drone]})
    assert np.allclose(sim.track.centerline[0], START, atol=0.01)
    sim.step_frame()
    truth = sim.flying_objects_table()
    assert truth.dtype == OBJECT_DTYPE and len(truth) == 1
    assert truth["class_id"][0] == CLASS_ID["drone"] and truth["track_id"][0] == FLYING_INSTANCE_BASE
    sweep = sim.lidar_sweep()
    hits = sweep.instance == FLYING_INSTANCE_BASE
    assert hits.sum() >= 3 and (sweep.semantic[hits] == SEMANTIC_ID["drone"]).all()

    frame = sim.camera_frame()
    assert frame.boxes.dtype == BOX2D_DTYPE
    assert frame.image.shape == (480, 640, 3) and frame.image.dtype == np.uint8
    (index,) = np.flatnonzero(frame.instances == FLYING_INSTANCE_BASE)
    box = frame.boxes[index]
    assert box["class_id"] == CLASS_ID["drone"]
    projected = project_box(sim, truth[0])
    assert box["u_min"] >= projected[0] - 1 and box["v_min"] >= projected[1] - 1
    assert box["u_max"] <= projected[2] + 1 and box["v_max"] <= projected[3] + 1
    mesh = project_mesh(sim, FLYING_INSTANCE_BASE)
    assert abs(box["u_min"] - mesh[0]) <= 1.5 and abs(box["u_max"] - mesh[2]) <= 1.5
    assert abs(box["v_min"] - mesh[1]) <= 1.5 and abs(box["v_max"] - mesh[3]) <= 1.5


def test_boxes_are_occlusion_aware_and_tiny_objects_have_none():
    # A bird hidden behind a car right in front of the camera, one far away (sub-pixel), one in the open.
    objects = [
        {"class": "bird", "position": at(25.0, 0.0, 0.8), "motion": "glide", "size": 0.4, "speed": 0.0},
        {"class": "bird", "position": at(400.0, -40.0, 30.0), "motion": "glide", "size": 0.3, "speed": 0.0},
        {"class": "bird", "position": at(20.0, -4.0, 6.0), "motion": "glide", "size": 1.2, "speed": 0.0},
    ]
    sim = make_sim(
        sensors={"lidar": {"enabled": False}},
        opponents=[{"gap": 10.0, "lane": 0.0, "speed": 20.0}],
        flying_objects={"count": 0, "objects": objects},
    )
    frame = sim.camera_frame()
    seen = set(frame.instances.tolist())
    assert FLYING_INSTANCE_BASE not in seen  # behind the car
    assert FLYING_INSTANCE_BASE + 1 not in seen  # a few tenths of a pixel
    assert FLYING_INSTANCE_BASE + 2 in seen
    assert 1 in seen  # the car itself, class car
    assert frame.boxes["class_id"][frame.instances == 1][0] == CLASS_ID["car"]
    assert ((frame.boxes["u_max"] > frame.boxes["u_min"]) & (frame.boxes["v_max"] > frame.boxes["v_min"])).all()


def test_car_alongside_the_camera_gets_a_box_cut_at_the_image_border():
    # Its box centre is level with the ego's, so its rear half is behind the camera.
    sim = make_sim(sensors={"lidar": {"enabled": False}}, opponents=[{"gap": 0.0, "lane": 3.5, "speed": 20.0}])
    frame = sim.camera_frame()
    (box,) = frame.boxes[frame.instances == 1]
    assert box["u_min"] == 0 and 20 < box["u_max"] < 320
    assert 240 < box["v_max"] < 480 and box["v_min"] > 100  # a 1.2 m high car seen from 1.4 m


def test_same_seed_same_clouds_images_and_truth_bit_for_bit():
    scenario = {
        "name": "determinism",
        "seed": 11,
        "track": {"type": "circuit", "seed": 4},
        "ego": {"speed": 40.0},
        "opponents": [{"gap": 25.0, "speed": 38.0}, {"gap": 50.0, "lane": 3.0, "speed": 35.0}],
        "flying_objects": {"count": 10},
    }
    runs = []
    for _ in range(2):
        sim = Simulation.from_scenario(scenario)
        outputs = []
        for _frame in range(3):
            sim.step_frame()
            sweep, frame = sim.lidar_sweep(), sim.camera_frame()
            outputs += [sweep.points.tobytes(), sweep.semantic.tobytes(), sweep.instance.tobytes()]
            outputs += [frame.image.tobytes(), frame.boxes.tobytes(), sim.flying_objects_table().tobytes()]
        runs.append(outputs)
    assert runs[0] == runs[1]
    other = Simulation.from_scenario({**scenario, "seed": 12})
    other.step_frame()
    assert other.lidar_sweep().points.tobytes() != runs[0][0]


def test_flying_objects_are_varied_realistic_and_follow_the_ego():
    objects = FlyingObjects(FlyingConfig(count=40), np.random.default_rng(3), (0.0, 0.0, 0.0))
    ego = np.zeros(3)
    for _ in range(200):  # 10 s at 60 m/s
        ego[0] += 3.0
        objects.step(0.05, ego)
    table = objects.objects_table()
    assert set(table["class_id"].tolist()) == {CLASS_ID[c] for c in ("drone", "bird", "airplane", "helicopter")}
    assert len(set(table["track_id"].tolist())) == len(table)
    assert (table["track_id"] >= FLYING_INSTANCE_BASE + 40).any()  # some were replaced ahead of the ego
    ahead = table["x"] - ego[0]
    near = np.isin(table["class_id"], [CLASS_ID["drone"], CLASS_ID["bird"]])
    assert (ahead[near] > -40.0).all()
    span = np.maximum(table["length"], table["width"])
    assert (span[table["class_id"] == CLASS_ID["drone"]] < 2.0).all()
    assert (span[table["class_id"] == CLASS_ID["airplane"]] > 8.0).all()
    assert (table["z"] > 0.5).all()
    for body, row in zip(objects.bodies(), table, strict=True):
        local = transform_points(
            np.linalg.inv(pose_matrix([row["x"], row["y"], row["z"], 0, 0, row["yaw"]])),
            body.mesh.vertices.astype(np.float64),
        )
        half = np.array([row["length"], row["width"], row["height"]]) / 2.0
        assert (np.abs(local) <= half + 1e-3).all()


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"sensors": {"lidar": {"beems": 64}}}, "sensors.lidar.beems"),
        ({"sensors": {"lidar": {"units": [{"beams": 0}]}}}, "sensors.lidar.units[0].beams"),
        ({"sensors": {"camera": {"fov": 90, "fx": 300}}}, "sensors.camera.fov"),
        ({"sensors": {"camera": {"sky": {"clouds": 0.5}}}}, "sensors.camera.sky.clouds"),
        ({"flying_objects": {"classes": {"ufo": 1.0}}}, "flying_objects.classes.ufo"),
        ({"flying_objects": {"objects": [{"class": "bird", "position": [0, 0]}]}},
         "flying_objects.objects[0].position"),
        ({"flying_objects": {"objects": [{"class": "drone", "position": [0, 0, 5], "motion": "flap"}]}},
         "flying_objects.objects[0].motion"),
    ],
)  # fmt: skip
def test_bad_sensor_sections_fail_naming_the_key(sections, key):
    with pytest.raises(ConfigError) as error:
        make_sim(**sections)
    assert error.value.key == key


def test_multi_unit_rig_and_camera_info():
    units = [
        {"pose": [0, 0, 0, 0, 0, 0], "beams": 16, "vertical_fov": [-15, 15], "columns": 256},
        {"pose": [0.5, 0, -0.3, 0, 0.1, 0], "vertical_angles": [-5, -3, -1, 1], "horizontal_fov": [-60, 60],
         "columns": 128, "max_range": 50.0},
    ]  # fmt: skip
    sim = make_sim(sensors={"lidar": {"units": units}, "camera": {"width": 320, "height": 240, "fov": 70}})
    sweep = sim.lidar_sweep()
    assert sweep.rays == 16 * 256 + 4 * 128
    assert set(np.unique(sweep.points["ring"])) <= set(range(20))
    second = sweep.points["ring"] >= 16
    assert second.any()
    assert (np.hypot(sweep.points["x"][second] - 0.5, sweep.points["y"][second]) < 50.0).all()
    assert (np.diff(sweep.points["time"][sweep.points["ring"] == 0]) >= 0).all()
    info = sim.sensors.camera.info()
    focal = 160.0 / np.tan(np.deg2rad(35.0))
    assert info.width == 320 and info.height == 240 and info.k[0] == pytest.approx(focal)
    assert sim.camera_frame().image.shape == (240, 320, 3)
    # 10 Hz sensors in a 20 Hz simulation: every second frame, LiDAR and camera on alternate frames.
    lidar = [sim.sensors.due("lidar", k * 0.05, 0.05) for k in range(8)]
    camera = [sim.sensors.due("camera", k * 0.05, 0.05) for k in range(8)]
    assert lidar == [True, False] * 4 and camera == [False, True] * 4


def project_box(sim: Simulation, row) -> tuple[float, float, float, float]:
    """Image rectangle of a 3D box's corners."""
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    corners *= [row["length"], row["width"], row["height"]]
    in_map = transform_points(pose_matrix([row["x"], row["y"], row["z"], 0, 0, row["yaw"]]), corners)
    return project(sim, in_map)


def project_mesh(sim: Simulation, instance: int) -> tuple[float, float, float, float]:
    (body,) = [b for b in sim.sensors.flying.bodies() if b.instance == instance]
    return project(sim, body.mesh.vertices.astype(np.float64))


def project(sim: Simulation, points: np.ndarray) -> tuple[float, float, float, float]:
    camera = sim.sensors.camera.config
    optical = planar_pose_matrix(*sim.ego_pose) @ camera_optical_matrix(camera.pose)
    local = transform_points(np.linalg.inv(optical), points)
    u = camera.fx * local[:, 0] / local[:, 2] + camera.cx
    v = camera.fy * local[:, 1] / local[:, 2] + camera.cy
    return float(u.min()), float(v.min()), float(u.max()), float(v.max())
