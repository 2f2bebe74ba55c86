"""ROS 2 launch file (full ROS 2 installs): starts the same graph file as ``racestack launch``.

    ros2 launch racestack racestack.launch.py graph:=default swap:=tracker=kalman,planner=mpc \\
        set:=mpc_planner.horizon=40 disable:=flying_object_detector

The graph -> process logic is racestack.graph.build_processes, shared with the project's launcher.
"""

import tempfile

from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

ARGUMENTS = {
    "graph": ("default", "graph file or name in launch/graphs"),
    "swap": ("", "comma-separated SLOT=IMPL"),
    "set": ("", "comma-separated NODE.PARAM=VALUE"),
    "disable": ("", "comma-separated node or slot names"),
    "transport": ("", "FASTDDS_BUILTIN_TRANSPORTS override"),
}


def _split(context, name):
    value = LaunchConfiguration(name).perform(context)
    return [item for item in value.split(",") if item]


def _processes(context):
    from racestack.graph import build_processes

    processes = build_processes(
        LaunchConfiguration("graph").perform(context),
        tempfile.mkdtemp(prefix="racestack-launch-"),
        swap=_split(context, "swap"),
        set_=_split(context, "set"),
        disable=_split(context, "disable"),
        transport=LaunchConfiguration("transport").perform(context),
    )
    return [
        ExecuteProcess(
            cmd=spec.cmd,
            env=spec.env,
            name=spec.name,
            output="screen",
            on_exit=Shutdown(reason=f"required node {spec.name} exited") if spec.required else None,
        )
        for spec in processes
    ]


def generate_launch_description():
    declared = [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_processes)])
