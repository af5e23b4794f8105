"""The ``pamtri mtmc run`` configuration: defaults here, YAML (--config) and --set override them."""
from __future__ import annotations

from dataclasses import dataclass, field

from pamtri.common.errors import ConfigError


@dataclass
class TrackletConfig:
    min_frames: int = 3            # shorter tracklets are dropped
    min_size: float = 12.0         # pixels: median of the shorter box side below this -> dropped
    roi_min_fraction: float = 0.5  # share of box bottom centres inside roi.jpg needed to keep a tracklet


@dataclass
class CropConfig:
    candidates: int = 8            # boxes decoded per tracklet (best by size and truncation, spread in time)
    per_tracklet: int = 4          # crops kept per tracklet (best by the full quality score)
    ref_size: float = 64.0         # pixels: box side at which the size score saturates
    batch_size: int = 32


@dataclass
class AssociationConfig:
    threshold: float = 0.5         # clusters merge while their average-linkage distance is below this
    constraints: bool = True       # use the topology's connections and travel-time windows
    same_camera_gap: float = 5.0   # seconds: a gap up to which two tracklets of one camera may be one vehicle
    rerank: bool = False           # k-reciprocal re-ranking of tracklet features
    rerank_threshold: float = 0.6  # the merge threshold on re-ranked distances (another scale)
    k1: int = 10
    k2: int = 3
    lambda_value: float = 0.3
    dense_max: int = 4000          # up to this many tracklets a dense matrix; beyond, the FAISS k-NN graph
    knn: int = 20                  # neighbours per tracklet on the sparse path


@dataclass
class OutputConfig:
    multi_camera_only: bool = True  # track1.txt keeps identities seen by 2+ cameras (the AI City rule)
    report_vehicles: int = 4        # example trips in the HTML report


@dataclass
class MTMCConfig:
    tracklets: TrackletConfig = field(default_factory=TrackletConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    association: AssociationConfig = field(default_factory=AssociationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self) -> None:
        a = self.association
        if not a.threshold > 0:
            raise ConfigError("association.threshold must be > 0")
        if a.knn < 1 or a.dense_max < 2:
            raise ConfigError("association.knn must be >= 1 and association.dense_max >= 2")
        if self.crops.per_tracklet < 1 or self.crops.candidates < self.crops.per_tracklet:
            raise ConfigError("crops.per_tracklet must be >= 1 and <= crops.candidates")
