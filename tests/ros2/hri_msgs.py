"""ROS 2 wire types of the messages ferrite publishes, for Eclipse Cyclone DDS.

A ROS 2 message travels as a DDS type named `<package>::msg::dds_::<Type>_` whose fields are the
.msg file's fields in order (constants are not on the wire), CDR little-endian. These mirror
builtin_interfaces/Time, std_msgs/Header and ros4hri/hri_msgs (commit 52bdab7) Expression,
IdsList and NormalizedRegionOfInterest2D. A reader with a different type name or layout would not
match ferrite's writers, or would decode garbage.
"""
from dataclasses import dataclass, field

from cyclonedds.idl import IdlStruct
from cyclonedds.idl.types import float32, int32, sequence, uint32


@dataclass
class Time_(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: int32 = 0
    nanosec: uint32 = 0


@dataclass
class Header_(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time_ = field(default_factory=Time_)
    frame_id: str = ""


@dataclass
class Expression_(IdlStruct, typename="hri_msgs::msg::dds_::Expression_"):
    header: Header_ = field(default_factory=Header_)
    expression: str = ""
    valence: float32 = 0.0
    arousal: float32 = 0.0
    confidence: float32 = 0.0


@dataclass
class IdsList_(IdlStruct, typename="hri_msgs::msg::dds_::IdsList_"):
    header: Header_ = field(default_factory=Header_)
    ids: sequence[str] = field(default_factory=list)


@dataclass
class NormalizedRegionOfInterest2D_(
    IdlStruct, typename="hri_msgs::msg::dds_::NormalizedRegionOfInterest2D_"
):
    header: Header_ = field(default_factory=Header_)
    xmin: float32 = 0.0
    ymin: float32 = 0.0
    xmax: float32 = 0.0
    ymax: float32 = 0.0
    c: float32 = 0.0
