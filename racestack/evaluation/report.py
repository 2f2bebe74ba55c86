"""The report folder of a run: plots, a Markdown and an HTML page, and machine-readable metrics.json."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import yaml
from rclpy.serialization import deserialize_message

from racestack.bags import Bag
from racestack.cdr import header_stamp_ns, message_class
from racestack.evaluation.recording import Recording
from racestack.evaluation.scoring import Scorecard
from racestack.grid import occupancy_to_grid
from racestack.image import image_to_array
from racestack.objects import BEV_CLASSES, OBJECT_CLASSES, cloud_to_boxes2d, cloud_to_objects
from racestack.paths import resolve_share_path
from racestack.pointcloud import read_points
from racestack.transforms import pose_matrix

PLOTS = ("bev", "reconstruction", "tracks", "risk_map", "trajectories", "detections", "latency")
BEV_COLORS = np.array([[0.15, 0.15, 0.15], [0.45, 0.45, 0.5], [0.95, 0.6, 0.1], [0.9, 0.1, 0.2]])
MAP_TOPICS = ("/map/left_bound", "/map/right_bound", "/map/racing_line")


def configured_lidar_pose(parameter_file: str = "lite.yaml") -> list[float]:
    """The LiDAR extrinsic the nodes use (the shared `/**` section of the parameter file)."""
    data = yaml.safe_load(resolve_share_path(parameter_file, "config/params").read_text()) or {}
    return list(data.get("/**", {}).get("ros__parameters", {}).get("lidar_pose", [0.0] * 6))


def message_at(bags: Sequence[Path], topic: str, stamp: int | None = None):
    """The first message on ``topic`` (with header stamp ``stamp`` if given), without loading the others."""
    for path in bags:
        with Bag(path) as bag:
            if topic not in bag.topics:
                continue
            cls = message_class(bag.topics[topic].msgtype)
            for message in bag.messages([topic]):
                if stamp is None or header_stamp_ns(message.data, cls) == stamp:
                    return deserialize_message(message.data, cls)
    return None


def _pick_stamp(rec: Recording, topics: Sequence[str]) -> int | None:
    """A stamp in the middle of the run that every given topic has."""
    common = None
    for topic in topics:
        stamps = set(rec.by_stamp(topic))
        common = stamps if common is None else common & stamps
    ordered = sorted(common or [])
    return ordered[len(ordered) // 2] if ordered else None


def _label_image(labels: np.ndarray) -> np.ndarray:
    return BEV_COLORS[np.clip(labels, 0, len(BEV_CLASSES) - 1)]


def plot_bev(bags, rec: Recording, out: Path, lidar_pose: Sequence[float]) -> str | None:
    stamp = _pick_stamp(rec, ["/perception/bev/segmentation"])
    if stamp is None:
        return None
    labels, grid = occupancy_to_grid(rec.by_stamp("/perception/bev/segmentation")[stamp].msg)
    truth = rec.by_stamp("/ground_truth/bev/segmentation").get(stamp)
    cloud = message_at(bags, "/sensing/lidar/points", stamp)
    panels = 2 + (truth is not None)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 5))
    extent = (grid.x_min, grid.x_max, grid.y_min, grid.y_max)
    if cloud is not None:
        points, _ = read_points(cloud)
        xyz = points[:, :3] @ pose_matrix(lidar_pose)[:3, :3].T + pose_matrix(lidar_pose)[:3, 3]
        axes[0].scatter(xyz[:, 0], xyz[:, 1], s=0.2, c=xyz[:, 2], cmap="viridis", vmin=-0.5, vmax=2.0)
    axes[0].set_title("LiDAR sweep (base_link, colour = height)")
    axes[1].imshow(_label_image(labels), origin="lower", extent=extent)
    axes[1].set_title("segmentation")
    if truth is not None:
        axes[2].imshow(_label_image(occupancy_to_grid(truth.msg)[0]), origin="lower", extent=extent)
        axes[2].set_title("ground truth")
    for ax in axes:
        ax.set_xlim(grid.x_min, grid.x_max)
        ax.set_ylim(grid.y_min, grid.y_max)
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in BEV_COLORS]
    axes[-1].legend(handles, BEV_CLASSES, loc="lower right", fontsize=7)
    return _save(fig, out / "bev.png")


def plot_reconstruction(bags, rec: Recording, out: Path) -> str | None:
    stamp = _pick_stamp(rec, ["/perception/bev/reconstruction"])
    if stamp is None:
        return None
    scene = image_to_array(rec.by_stamp("/perception/bev/reconstruction")[stamp].msg)
    titles = ["occupancy now", "height (m)", "occupancy +0.5 s", "occupancy +1.0 s"]
    fig, axes = plt.subplots(1, scene.shape[2], figsize=(4 * scene.shape[2], 4))
    for k, ax in enumerate(np.atleast_1d(axes)):
        image = ax.imshow(scene[:, :, k], origin="lower", cmap="magma" if k != 1 else "viridis")
        ax.set_title(titles[k] if k < len(titles) else f"channel {k}")
        fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, out / "reconstruction.png")


def _draw_map(ax, bags) -> None:
    for topic in MAP_TOPICS:
        path = message_at(bags, topic)
        if path is not None and path.poses:
            xy = np.array([(p.pose.position.x, p.pose.position.y) for p in path.poses])
            ax.plot(xy[:, 0], xy[:, 1], "--" if "racing" in topic else "-", color="0.6", lw=0.8)


def _zoom(ax, xy: np.ndarray, margin: float = 60.0) -> None:
    """Frame the driven stretch (the whole circuit is often kilometres wide)."""
    if len(xy):
        lo, hi = xy.min(axis=0) - margin, xy.max(axis=0) + margin
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])


def plot_tracks(bags, rec: Recording, out: Path) -> str | None:
    if not rec.has("/perception/objects/tracked"):
        return None
    fig, ax = plt.subplots(figsize=(8, 8))
    _draw_map(ax, bags)
    truth = [cloud_to_objects(s.msg) for s in rec["/ground_truth/objects"]]
    if truth:
        table = np.concatenate(truth)
        ax.scatter(table["x"], table["y"], s=1, color="0.8", label="ground truth")
    tracks = np.concatenate([cloud_to_objects(s.msg) for s in rec["/perception/objects/tracked"]] or [np.zeros(0)])
    if len(tracks):
        ids = tracks["track_id"]
        ax.scatter(tracks["x"], tracks["y"], s=2, c=ids % 20, cmap="tab20", label="tracks (colour = id)")
        for track_id in np.unique(ids)[:60]:
            last = tracks[ids == track_id][-1]
            ax.annotate(str(track_id), (last["x"], last["y"]), fontsize=6)
    ego = np.array([(s.msg.pose.pose.position.x, s.msg.pose.pose.position.y) for s in rec["/localization/odometry"]])
    if len(ego):
        ax.plot(ego[:, 0], ego[:, 1], color="k", lw=1.0, label="ego")
    _zoom(ax, ego)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title("tracks with ids (map frame)")
    return _save(fig, out / "tracks.png")


def plot_risk_map(bags, rec: Recording, out: Path) -> str | None:
    samples = rec["/planning/risk_map"]
    if not samples:
        return None
    risk = image_to_array(samples[len(samples) // 2].msg)
    risk = risk[:, :, None] if risk.ndim == 2 else risk
    steps = np.linspace(0, risk.shape[2] - 1, min(4, risk.shape[2])).astype(int)
    fig, axes = plt.subplots(1, len(steps), figsize=(4 * len(steps), 4))
    for ax, k in zip(np.atleast_1d(axes), steps, strict=True):
        image = ax.imshow(risk[:, :, k], origin="lower", cmap="inferno", vmin=0, vmax=max(float(risk.max()), 1e-6))
        ax.set_title(f"risk, horizon step {k + 1}/{risk.shape[2]}")
        fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, out / "risk_map.png")


def plot_trajectories(bags, rec: Recording, out: Path) -> str | None:
    plans = rec["/planning/trajectory"]
    if not plans:
        return None
    fig, ax = plt.subplots(figsize=(8, 8))
    _draw_map(ax, bags)
    ego = np.array([(s.msg.pose.pose.position.x, s.msg.pose.pose.position.y) for s in rec["/localization/odometry"]])
    if len(ego):
        ax.plot(ego[:, 0], ego[:, 1], color="k", lw=1.2, label="driven")
    cmap = plt.get_cmap("viridis")
    for i, sample in enumerate(plans[:: max(1, len(plans) // 40)]):
        xy = np.array([(p.pose.position.x, p.pose.position.y) for p in sample.msg.poses])
        if len(xy):
            ax.plot(xy[:, 0], xy[:, 1], color=cmap(i / 40), lw=0.8, alpha=0.8)
    _zoom(ax, ego)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title("planned trajectories over time (colour = time)")
    return _save(fig, out / "trajectories.png")


def plot_detections(bags, rec: Recording, out: Path) -> str | None:
    truth = rec.by_stamp("/ground_truth/camera/boxes")
    detections = rec.by_stamp("/perception/flying_objects/detections_2d")
    if not detections:
        return None
    stamps = sorted(detections, key=lambda s: -len(cloud_to_boxes2d(truth[s].msg)) if s in truth else 0)
    stamp = stamps[0]
    image = message_at(bags, "/sensing/camera/image_raw", stamp)
    fig, ax = plt.subplots(figsize=(10, 7))
    if image is not None:
        pixels = image_to_array(image)
        ax.imshow(pixels[:, :, ::-1] if image.encoding == "bgr8" else pixels)
    for table, color, label in (
        (cloud_to_boxes2d(truth[stamp].msg) if stamp in truth else None, "cyan", "truth"),
        (cloud_to_boxes2d(detections[stamp].msg), "red", "detection"),
    ):
        for row in table if table is not None else []:
            ax.add_patch(plt.Rectangle((row["u_min"], row["v_min"]), row["u_max"] - row["u_min"],
                                       row["v_max"] - row["v_min"], fill=False, color=color, lw=1.2))
            name = OBJECT_CLASSES[row["class_id"]] if 0 <= row["class_id"] < len(OBJECT_CLASSES) else "?"
            text = f"{name} {row['score']:.2f}" if label == "detection" else name
            ax.text(row["u_min"], row["v_min"] - 2, text, color=color, fontsize=7)
    ax.set_title("flying-object detections (red) and ground truth (cyan)")
    ax.axis("off")
    return _save(fig, out / "detections.png")


def plot_latency(card: Scorecard, out: Path) -> str | None:
    series = {k: v for k, v in card.samples.items() if v}
    if not series:
        return None
    fig, axes = plt.subplots(len(series), 1, figsize=(8, 1.8 * len(series)), squeeze=False)
    for ax, (name, values) in zip(axes[:, 0], series.items(), strict=True):
        ax.hist(values, bins=40, color="tab:blue")
        stats = card.latency.get(name, {})
        ax.set_title(f"{name}: p50 {stats.get('p50', math.nan):.1f} ms, p99 {stats.get('p99', math.nan):.1f} ms",
                     fontsize=9)
    axes[-1, 0].set_xlabel("latency from the input frame (ms)")
    return _save(fig, out / "latency.png")


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")  # equal-aspect panels clipped their titles
    plt.close(fig)
    return path.name


def summary_rows(card: Scorecard) -> list[tuple[str, str]]:
    rows = [(k, _fmt(v)) for k, v in sorted(card.metrics.items())]
    rows += [(f"latency {k} p50 / p99 (ms)", f"{v['p50']:.1f} / {v['p99']:.1f}") for k, v in card.latency.items()]
    rows += [(f"node {k} processing p50 / p99 (ms)", f"{v['processing_ms_p50']} / {v['processing_ms_p99']}")
             for k, v in sorted(card.nodes.items()) if "processing_ms_p50" in v]
    return rows


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_report(
    bags: Sequence[Path],
    card: Scorecard,
    out: Path,
    title: str,
    context: dict[str, Any],
    lidar_pose: Sequence[float] | None = None,
) -> Path:
    """Writes plots, report.md, report.html and metrics.json into ``out``; returns report.html."""
    lidar_pose = configured_lidar_pose() if lidar_pose is None else lidar_pose
    out.mkdir(parents=True, exist_ok=True)
    rec = Recording(bags, ("/perception/bev/segmentation", "/ground_truth/bev/segmentation",
                           "/perception/bev/reconstruction", "/perception/objects/tracked", "/ground_truth/objects",
                           "/localization/odometry", "/planning/risk_map", "/planning/trajectory",
                           "/ground_truth/camera/boxes", "/perception/flying_objects/detections_2d"))
    plots = {
        "bev": plot_bev(bags, rec, out, lidar_pose),
        "reconstruction": plot_reconstruction(bags, rec, out),
        "tracks": plot_tracks(bags, rec, out),
        "risk_map": plot_risk_map(bags, rec, out),
        "trajectories": plot_trajectories(bags, rec, out),
        "detections": plot_detections(bags, rec, out),
        "latency": plot_latency(card, out),
    }
    (out / "metrics.json").write_text(json.dumps({**context, **card.as_dict(), "plots": plots}, indent=2, default=str))
    rows = summary_rows(card)
    skipped = sorted(card.skipped.items())
    md = [f"# {title}", "", *(f"- {k}: {v}" for k, v in context.items()), "", "| metric | value |", "| --- | --- |"]
    md += [f"| {k} | {v} |" for k, v in rows]
    md += ["", "## Skipped", "", *(f"- {k}: {v}" for k, v in skipped), ""]
    md += [f"## {name}\n\n![{name}]({file})\n" if file else f"## {name}\n\n(no data)\n" for name, file in plots.items()]
    (out / "report.md").write_text("\n".join(md))
    body = [f"<h1>{html.escape(title)}</h1><ul>"]
    body += [f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in context.items()]
    body += ["</ul><table border=1 cellpadding=3><tr><th>metric</th><th>value</th></tr>"]
    body += [f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows]
    body += ["</table><h2>Skipped</h2><ul>", *(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in skipped)]
    body += ["</ul>"]
    body += [f"<h2>{name}</h2>" + (f'<img src="{file}" style="max-width:100%">' if file else "<p>(no data)</p>")
             for name, file in plots.items()]
    page = out / "report.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'><title>racestack report</title></head><body>"
                    + "\n".join(body) + "</body></html>")
    return page
