from __future__ import annotations

from pathlib import Path

import pytest

from training.court.settings import CourtSettings
from training.court.store import Court

LINES = [
    ("你最喜欢吃什么？", "当然是刚出炉的糯米糍啦，软软糯糯的，一口下去心都化了。"),
    ("你平时几点开店？", "早上七点就开门啦，第一炉面包要趁热卖给赶早的客人。"),
    ("下雨天你会做什么？", "窝在店里揉面团，听着雨声烤红豆面包，最安心了。"),
    ("What do you do on weekends?", "I bake a double batch of melon bread and take some to the old lady next door."),
    ("你害怕什么？", "最怕烤箱突然坏掉，那一整天的面包就全泡汤了呜呜。"),
    ("Who taught you to bake?", "My grandma did, in her tiny kitchen that always smelled of butter and cinnamon."),
]


@pytest.fixture
def rules() -> CourtSettings:
    return CourtSettings(min_votes=3)


@pytest.fixture
def court(tmp_path: Path, rules: CourtSettings) -> Court:
    c = Court(tmp_path / "court.db", rules)
    yield c
    c.close()


@pytest.fixture
def people(court: Court):
    """Six registered users: (user, token) by name."""
    return {name: court.add_user(name) for name in ("ann", "bo", "cy", "di", "ed", "flo")}


def cast(court: Court, user, submission_id: int, verdict: str):
    return court.vote(user, court.ballot(user, submission_id).token, verdict)


COMMON = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种"
    "面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本"
    "去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比"
    "或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总"
    "次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做"
    "必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权"
    "收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信"
    "马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连"
    "断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存"
    "候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严"
)


def varied_line(i: int) -> tuple[str, str]:
    """A distinct, rule-abiding question and answer for load tests (no two are near copies)."""
    import random

    rng = random.Random(i)
    q = "".join(rng.sample(COMMON, 8))
    a = "".join(rng.sample(COMMON, 24))
    return f"你觉得{q}怎么样？", f"{a}。"
