"""Every criterion of the readiness test: its name on the wire, its labels and advice.

The agent evaluates them, the collector stores them, the checklist, the report and the
alerts show them; all take names, Vietnamese and English labels, units and the advice
to a technician from here, so a criterion reads the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CriterionInfo:
    name: str  # slug, the wire's Criterion.name
    unit: str  # "s", "ratio", "bit/s", "count", "mos", "bool"
    vi: str
    en: str
    advice_vi: str
    advice_en: str


_ALL = (
    CriterionInfo("link-rtt", "s", "Độ trễ khứ hồi", "Round-trip time",
                  "Kiểm tra đường truyền, tắt tải nặng trên mạng của điểm cầu",
                  "Check the line; stop heavy traffic on the site's network"),
    CriterionInfo("link-jitter", "s", "Độ biến thiên trễ (jitter)", "Jitter",
                  "Kiểm tra đường truyền và thiết bị mạng, ưu tiên lưu lượng hội nghị",
                  "Check the line and network gear; prioritise conference traffic"),
    CriterionInfo("link-loss", "ratio", "Tỷ lệ mất gói", "Packet loss",
                  "Kiểm tra cáp, modem và nhà cung cấp đường truyền",
                  "Check cables, the modem and the line provider"),
    CriterionInfo("link-mos", "mos", "Chất lượng thoại ước tính (MOS)", "Estimated MOS",
                  "Khắc phục trễ, jitter và mất gói", "Fix delay, jitter and loss"),
    CriterionInfo("bandwidth-up", "bit/s", "Băng thông tải lên", "Upload bandwidth",
                  "Liên hệ nhà cung cấp; tắt các ứng dụng dùng mạng",
                  "Call the provider; close programs using the network"),
    CriterionInfo("bandwidth-down", "bit/s", "Băng thông tải xuống", "Download bandwidth",
                  "Liên hệ nhà cung cấp; tắt các ứng dụng dùng mạng",
                  "Call the provider; close programs using the network"),
    CriterionInfo("camera", "count", "Camera", "Camera",
                  "Cắm lại camera, kiểm tra cáp USB/HDMI", "Replug the camera; check its cable"),
    CriterionInfo("microphone", "count", "Micrô", "Microphone",
                  "Cắm lại micrô, kiểm tra nguồn", "Replug the microphone; check its power"),
    CriterionInfo("speaker", "count", "Loa", "Speaker",
                  "Cắm lại loa, kiểm tra nguồn và âm lượng",
                  "Replug the speaker; check power and volume"),
    CriterionInfo("display", "count", "Màn hình", "Display",
                  "Bật màn hình, kiểm tra cáp HDMI", "Turn the display on; check the HDMI cable"),
    CriterionInfo("ups-power", "bool", "Nguồn điện lưới", "Mains power",
                  "UPS đang chạy pin: kiểm tra điện lưới", "UPS on battery: check the mains"),
    CriterionInfo("ups-runtime", "s", "Thời gian lưu điện", "UPS runtime",
                  "Sạc đầy hoặc thay ắc quy UPS; giảm tải",
                  "Charge or replace the battery; cut load"),
    CriterionInfo("recording-space", "s", "Dung lượng ghi hình còn lại", "Recording time left",
                  "Chép bản ghi cũ sang ổ dự phòng rồi xoá bớt",
                  "Move old recordings to the backup disk, then free space"),
    CriterionInfo("backup-disk", "bool", "Ổ cứng dự phòng", "Backup disk",
                  "Cắm và gắn (mount) ổ cứng dự phòng", "Plug in and mount the backup disk"),
    CriterionInfo("clock", "s", "Sai lệch đồng hồ", "Clock offset",
                  "Đồng bộ giờ với máy chủ NTP", "Synchronise the clock with the NTP server"),
    CriterionInfo("software", "bool", "Phần mềm hội nghị", "Conference software",
                  "Mở phần mềm hội nghị truyền hình", "Start the conference software"),
)

CRITERIA: dict[str, CriterionInfo] = {c.name: c for c in _ALL}
