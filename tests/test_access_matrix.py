"""Who gets what, for every route in the URL conf: one table, nine personas, a read and a write each.
(Long because it is one table on purpose: every route's row side by side, checked against the URL conf.)

The routes are walked from the URL conf itself, so a new route without a row in ROUTES fails
`test_every_route_has_a_row` by name, and a row whose route is gone fails it too. The rule the table
writes down (raters.access): whoever has no role in a study gets 404 for every URL under it, read or
write, exactly as for a study that does not exist, so ids don't leak; a member lacking the role a page
needs gets 404 as well (the pages' convention: `get_study_for(..., roles=...)`), and 403 only where the
refusal names no study or object (a global role: creating studies, staff pages) or the user's role in
the study is already the right one and only the action is the owner's (co-researchers).

Outcomes are classes, not codes: the point is the access decision, not whether a minimal body is a
valid request (a 400/409/410 says the check passed). The world is built once for the module and every
request runs inside the test's own transaction, rolled back after it, so a write never leaks into the
next row.
"""

from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from evalapp.models import Response
from modelserver.judge_services import judge_create
from modelserver.models import Adapter, GenerationRun, JudgeRun, PlaygroundRequest, TrainingRun
from raters import services as rater_services
from raters.models import CalibrationItem, Role

from .factories import (ArmFactory, MembershipFactory, PromptFactory, RatingFactory, ResponseFactory, StudyFactory,
                        UserFactory)

PERSONAS = ("anonymous", "outsider", "rater", "other_rater", "adjudicator", "owner", "coresearcher",
            "other_researcher", "staff")
LOGGED_IN = PERSONAS[1:]

OK, LOGIN, NOT_FOUND, FORBIDDEN, NO_METHOD = "allowed", "login", "not-found", "forbidden", "no-method"

MEMBERS = ("owner", "coresearcher", "rater", "adjudicator")
RESEARCHERS = ("owner", "coresearcher")  # the researcher role in study A
ADJUDICATING = ("owner", "adjudicator")  # a co-researcher does not adjudicate (evalapp/views/adjudication.py)
RESEARCHER_ROLE = ("owner", "coresearcher", "other_researcher")  # may create studies

CSRF_SECRET = "a" * 32  # the csrftoken cookie's secret; the same value in the header passes Django's check
GHOST_STUDY_ID = 10**9
# Raters of study A who withdrew ("they see nothing more", raters.services.consent_withdraw: they stand
# where an outsider stands), or whom its researcher excluded (turned away from rating, free to withdraw).
FORMER_RATERS = ("withdrawn_rater", "excluded_rater")
RATING_ROUTES = ("rate", "rate_submit", "api_rating_next", "api_rating_submit", "compare", "compare_submit",
                 "rate_distress", "compare_distress", "welfare_break", "welfare_cap_finish")


def audience(*allowed, others=NOT_FOUND, anonymous=LOGIN) -> dict:
    """Those named are let in, every other logged-in persona gets `others`, the anonymous `anonymous`."""
    return {"anonymous": anonymous, **{p: OK if p in allowed else others for p in LOGGED_IN}}


def everyone(outcome=OK) -> dict:
    return dict.fromkeys(PERSONAS, outcome)


def api_refuses_method(*members) -> dict:
    """The API finds the study before it looks at the method: a member gets 405, anyone else 404."""
    return {**audience(), **dict.fromkeys(members, NO_METHOD)}


LOGGED_IN_ONLY = audience(*LOGGED_IN)
NOT_THIS_METHOD = audience(others=NO_METHOD)  # login first, then the method is refused, whatever the id


@dataclass(frozen=True)
class Row:
    read: dict  # outcome per persona of a GET
    write: dict  # outcome per persona of `method` with `data`
    kwargs: object = None  # world -> kwargs of reverse(); None: {"study_id": study A}
    method: str = "post"
    data: object = None  # world -> body of the write
    json: bool = False
    # The kwargs that name one object (not the study, not a file name): a request for them under another
    # study, by someone with the right role there, must be 404 too (test_objects_of_another_study_are_hidden).
    objects: tuple = field(default=())


def study(**extra):
    return lambda w: {"study_id": w["study"].id, **{k: v(w) for k, v in extra.items()}}


def rating_body(w):
    return {"score-empathy": "5", "score-fluency": "5"}


def pair_body(w):
    return {f"pick-{key}": "a" for key in w["study"].pairwise.keys()}


ROUTES: dict[str, Row] = {
    # -- no study: public pages, the account pages, the API's own description
    "home": Row(read=everyone(), write=everyone(), kwargs=lambda w: {}),
    "healthz": Row(read=everyone(), write=everyone(NO_METHOD), kwargs=lambda w: {}),
    "favicon.ico": Row(read=everyone(), write=everyone(), kwargs=lambda w: {}),
    "login": Row(read=everyone(), write=everyone(), kwargs=lambda w: {}),
    "logout": Row(read=everyone(NO_METHOD), write=everyone(), kwargs=lambda w: {}),
    "password_change": Row(read=LOGGED_IN_ONLY, write=LOGGED_IN_ONLY, kwargs=lambda w: {}),
    "password_change_done": Row(read=LOGGED_IN_ONLY, write=NOT_THIS_METHOD, kwargs=lambda w: {}),
    "password_reset": Row(read=everyone(), write=everyone(), kwargs=lambda w: {}),
    "password_reset_done": Row(read=everyone(), write=everyone(NO_METHOD), kwargs=lambda w: {}),
    "password_reset_confirm": Row(read=everyone(), write=everyone(),
                                  kwargs=lambda w: {"uidb64": "MQ", "token": "set-password"}),
    "password_reset_complete": Row(read=everyone(), write=everyone(NO_METHOD), kwargs=lambda w: {}),
    # The schema names endpoints and fields, never a row, so it is public as drf-spectacular serves it.
    "api_schema": Row(read=everyone(), write=everyone(NO_METHOD), kwargs=lambda w: {}),
    "api_docs": Row(read=everyone(), write=everyone(NO_METHOD), kwargs=lambda w: {}),
    "api_presets": Row(read=LOGGED_IN_ONLY, write=NOT_THIS_METHOD, kwargs=lambda w: {}),
    "invitation_accept": Row(read=everyone(), write=everyone(), kwargs=lambda w: {"token": w["token"]}),
    # A pool's entry link is public (the link is the credential); without a participant id it is a 400 for
    # anyone and writes nothing, and only GET follows it. Its completion page is the participant's own.
    "panel_enter": Row(read=everyone(), write=everyone(NO_METHOD), kwargs=lambda w: {"slug": w["panel_link"].slug}),
    "panel_done": Row(read=audience(), write=audience(), kwargs=lambda w: {"slug": w["panel_link"].slug}),
    # -- global roles: a refusal names no study, so 403 leaks nothing
    "api_studies": Row(read=LOGGED_IN_ONLY, write=audience(*RESEARCHER_ROLE, others=FORBIDDEN), kwargs=lambda w: {},
                       json=True),
    "study_list": Row(read=LOGGED_IN_ONLY, write=LOGGED_IN_ONLY, kwargs=lambda w: {}),
    "study_new": Row(read=audience(*RESEARCHER_ROLE, others=FORBIDDEN),
                     write=audience(*RESEARCHER_ROLE, others=FORBIDDEN),
                     kwargs=lambda w: {}),
    "staff_researchers": Row(read=audience("staff", others=FORBIDDEN), write=audience("staff", others=FORBIDDEN),
                             kwargs=lambda w: {}),
    # -- adapters belong to who trained them: anyone else gets 404, as for a missing id
    "adapter_list": Row(read=LOGGED_IN_ONLY, write=LOGGED_IN_ONLY, kwargs=lambda w: {}),
    "adapter_detail": Row(read=audience("owner"), write=audience("owner"),
                          kwargs=lambda w: {"adapter_id": w["adapter"].id}),
    "adapter_loss_plot": Row(read=audience("owner"), write=audience("owner"),
                             kwargs=lambda w: {"adapter_id": w["adapter"].id}),
    # -- the API under a study
    "api_study": Row(read=audience(*MEMBERS), write=api_refuses_method(*MEMBERS)),
    "api_study_clone": Row(read=api_refuses_method(*RESEARCHERS), write=audience(*RESEARCHERS)),
    "api_study_rubric": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS), method="put", json=True),
    "api_prompts": Row(read=audience(*RESEARCHERS), write=api_refuses_method(*RESEARCHERS)),
    "api_prompts_import": Row(read=api_refuses_method(*RESEARCHERS), write=audience(*RESEARCHERS)),
    "api_arms": Row(read=audience(*RESEARCHERS), write=api_refuses_method(*RESEARCHERS)),
    # A body the serializer refuses: the study is looked up first, so a non-member still gets 404.
    "api_generation_runs": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS), json=True,
                               data=lambda w: {"seed": "not a number"}),
    "api_generation_run": Row(read=audience(*RESEARCHERS), write=api_refuses_method(*RESEARCHERS),
                              kwargs=study(run_id=lambda w: w["generation_run"].id), objects=("run_id",)),
    "api_judges": Row(read=audience(*RESEARCHERS), write=api_refuses_method(*RESEARCHERS)),
    "api_rating_next": Row(read=audience("rater"), write=api_refuses_method("rater")),
    "api_rating_submit": Row(read=api_refuses_method("rater"), write=audience("rater"), json=True,
                             data=lambda w: {"answers": {"empathy": 5, "fluency": 5}},
                             kwargs=study(public_id=lambda w: w["assigned"].public_id), objects=("public_id",)),
    "api_adjudications": Row(read=audience(*RESEARCHERS, "adjudicator"),
                             write=api_refuses_method(*RESEARCHERS, "adjudicator")),
    "api_results": Row(read=audience(*RESEARCHERS), write=api_refuses_method(*RESEARCHERS)),
    "api_pairwise_results": Row(read=audience(*RESEARCHERS), write=api_refuses_method(*RESEARCHERS)),
    "api_judge_validation": Row(read=audience(*RESEARCHERS), write=api_refuses_method(*RESEARCHERS),
                                kwargs=study(judge_id=lambda w: w["judge"].id), objects=("judge_id",)),
    "api_export": Row(read=audience(*RESEARCHERS), write=api_refuses_method(*RESEARCHERS),
                      kwargs=study(name=lambda w: "ratings")),
    # -- pages under a study
    "study_detail": Row(read=audience(*MEMBERS), write=audience(*MEMBERS)),
    "study_clone": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS)),
    "study_import": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS)),
    "study_settings": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS)),
    "study_rubric": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS)),
    "study_researchers": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    # Only the owner adds co-researchers: a co-researcher knows the study, so the refusal is a 403.
    "study_researcher_change": Row(read=NOT_THIS_METHOD, write=audience("owner") | {"coresearcher": FORBIDDEN},
                                   data=lambda w: {"email": "nobody@example.org"}),
    # Only the owner deletes; an empty title is refused on the page (nothing deleted), which passes the check.
    "study_delete": Row(read=audience("owner") | {"coresearcher": FORBIDDEN},
                        write=audience("owner") | {"coresearcher": FORBIDDEN}),
    "arm_add": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS)),
    "generation_start": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS)),
    "generation_runs_fragment": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    "generation_resume": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS),
                             kwargs=study(run_id=lambda w: w["generation_run"].id), objects=("run_id",)),
    "generation_regenerate_truncated": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS),
                                           kwargs=study(arm_id=lambda w: w["arm"].id), objects=("arm_id",),
                                           data=lambda w: {"max_new_tokens": "128"}),
    "training_start": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS)),
    "training_runs_fragment": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    "training_resume": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS),
                           kwargs=study(run_id=lambda w: w["training_run"].id), objects=("run_id",)),
    "playground": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    # A playground request is its author's (the owner's here): a co-researcher gets 404 like anyone else.
    "playground_item": Row(read=audience("owner"), write=audience("owner"),
                           kwargs=study(request_id=lambda w: w["playground"].id), objects=("request_id",)),
    # -- LLM judges: an empty body is refused by the form (no judge, no run), which passes the check
    "judges": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    "judges_fragment": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    "judge_run_start": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS),
                           kwargs=study(judge_id=lambda w: w["judge"].id), objects=("judge_id",)),
    "judge_run_resume": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS),
                            kwargs=study(run_id=lambda w: w["judge_run"].id), objects=("run_id",)),
    "adjudication_queues": Row(read=audience(*ADJUDICATING), write=audience(*ADJUDICATING)),
    "adjudication_history": Row(read=audience(*ADJUDICATING), write=audience(*ADJUDICATING)),
    "adjudication_item": Row(read=audience(*ADJUDICATING), write=audience(*ADJUDICATING),
                             kwargs=study(public_id=lambda w: w["rated"].public_id), objects=("public_id",)),
    "adjudication_pair": Row(read=audience(*ADJUDICATING), write=audience(*ADJUDICATING),
                             kwargs=study(public_id=lambda w: w["pair"].public_id), objects=("public_id",)),
    "adjudication_decide": Row(read=NOT_THIS_METHOD, write=audience(*ADJUDICATING),
                               kwargs=study(public_id=lambda w: w["rated"].public_id), objects=("public_id",),
                               data=lambda w: {"action": "resolve", "scale": "empathy", "final_score": "5",
                                               "rationale": "checked"}),
    "results": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    "results_json": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    "results_progress": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    "results_plot": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS),
                        kwargs=study(name=lambda w: "distributions", fmt=lambda w: "svg")),
    "export_csv": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS),
                      kwargs=study(name=lambda w: "ratings")),
    "export_zip": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    # The planner is read-only (GET and HEAD): a plan is its query string. Without one the page is
    # its form and the plot a 400.
    "planner": Row(read=audience(*RESEARCHERS), write=NOT_THIS_METHOD),
    "planner_plot": Row(read=audience(*RESEARCHERS), write=NOT_THIS_METHOD),
    "pairwise_results": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    "pairwise_results_json": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    "pairwise_plot": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS),
                         kwargs=study(name=lambda w: "outcomes")),
    "export_preferences": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    # A judge's validation report is read-only (GET and HEAD), as the planner.
    "judge_report": Row(read=audience(*RESEARCHERS), write=NOT_THIS_METHOD,
                        kwargs=study(judge_id=lambda w: w["judge"].id), objects=("judge_id",)),
    "judge_report_plot": Row(read=audience(*RESEARCHERS), write=NOT_THIS_METHOD, objects=("judge_id",),
                             kwargs=study(judge_id=lambda w: w["judge"].id, key=lambda w: "empathy")),
    # -- raters' pages: the rater of this study only
    "consent": Row(read=audience("rater"), write=audience("rater")),
    "withdraw": Row(read=NOT_THIS_METHOD, write=audience("rater")),
    "calibration": Row(read=audience("rater"), write=audience("rater")),
    "rate": Row(read=audience("rater"), write=audience("rater")),
    "rate_submit": Row(read=NOT_THIS_METHOD, write=audience("rater"), data=rating_body,
                       kwargs=study(public_id=lambda w: w["assigned"].public_id), objects=("public_id",)),
    "compare": Row(read=audience("rater"), write=audience("rater")),
    "compare_submit": Row(read=NOT_THIS_METHOD, write=audience("rater"), data=pair_body,
                          kwargs=study(public_id=lambda w: w["pair"].public_id), objects=("public_id",)),
    # -- rater welfare (raters/welfare_views.py): the distress skip and the break are the rater's; the support
    # page any member's; the settings and distress reports the researchers'
    "rate_distress": Row(read=NOT_THIS_METHOD, write=audience("rater"),
                         kwargs=study(public_id=lambda w: w["assigned"].public_id), objects=("public_id",)),
    "compare_distress": Row(read=NOT_THIS_METHOD, write=audience("rater"),
                            kwargs=study(public_id=lambda w: w["pair"].public_id), objects=("public_id",)),
    "welfare_break": Row(read=NOT_THIS_METHOD, write=audience("rater")),
    "welfare_cap_finish": Row(read=NOT_THIS_METHOD, write=audience("rater")),  # 409 for a rater from no pool
    "support": Row(read=audience(*MEMBERS), write=audience(*MEMBERS)),
    "welfare_page": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    # -- the researcher's pairwise phase: an empty body is refused by the form, which passes the check
    "pairwise_design": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    "pairwise_gold_add": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS)),
    "pairwise_status": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS)),
    # -- the researcher's rater management
    "raters_page": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    "raters_invite": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS)),
    "raters_bulk_codes": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS)),
    "rater_groups": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    "consent_publish": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS)),
    "calibration_item_add": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS, "adjudicator")),
    "calibration_item_remove": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS),
                                   kwargs=study(public_id=lambda w: w["calibration_item"].public_id),
                                   objects=("public_id",)),
    "rater_decide": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS), data=lambda w: {"action": "approve"},
                        kwargs=study(user_id=lambda w: w["rater"].id), objects=("user_id",)),
    "open_for_rating": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS), data=lambda w: {"confirm": "yes"}),
    # -- participant pools: an empty body is refused by the form (no link saved, no file read)
    "panel_page": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    "panel_reconcile": Row(read=audience(*RESEARCHERS), write=audience(*RESEARCHERS)),
    # Close, open again, or delete a link: POST only, and a link of study A is not found under study B.
    "panel_link_change": Row(read=NOT_THIS_METHOD, write=audience(*RESEARCHERS), data=lambda w: {"action": "close"},
                             kwargs=study(link_id=lambda w: w["panel_link"].id), objects=("link_id",)),
    # The payment sheet is a download (GET, audited as an export); without ?rate= it is a 400.
    "panel_payments": Row(read=audience(*RESEARCHERS), write=NOT_THIS_METHOD),
}

# Django's admin: 100-odd generated routes behind one gate (admin_view: is_staff, then Django's model
# permissions), none of them written here. They are one group; these stand for it. A staff member
# without model permissions sees the index and is refused (403) a model's pages.
ADMIN_NAMESPACE = "admin"
STAFF_ONLY = audience("staff", others=LOGIN)
ADMIN_ROWS: dict[str, Row] = {
    "admin:index": Row(read=STAFF_ONLY, write=STAFF_ONLY, kwargs=lambda w: {}),
    "admin:evalapp_study_changelist": Row(read=audience(others=LOGIN) | {"staff": FORBIDDEN},
                                          write=audience(others=LOGIN) | {"staff": FORBIDDEN}, kwargs=lambda w: {}),
    "admin:evalapp_study_change": Row(read=audience(others=LOGIN) | {"staff": FORBIDDEN},
                                      write=audience(others=LOGIN) | {"staff": FORBIDDEN},
                                      kwargs=lambda w: {"object_id": w["study"].id}),
}

# Reads that write, on purpose: the calibration page starts the rater's attempt when it shows the
# first item (raters.services.calibration_attempt_start). Every other GET must write nothing but the
# session and the login throttle's bookkeeping.
WRITING_READS = set()
# evalapp_resultscomputation is the results cache's job row (evalapp/results_models.py): a GET of the
# results may start the computation, as a cache fill, and it changes nothing a user can see but the wait.
BOOKKEEPING_TABLES = ("django_session", "axes_", "evalapp_resultscomputation")


def url_conf_routes() -> dict[str, tuple[str, str | None]]:
    """Every route: its name (namespaced, or its path where it has none) -> (its path pattern, namespace)."""
    out = {}

    def walk(patterns, prefix, namespace):
        for p in patterns:
            if isinstance(p, URLResolver):
                ns = f"{namespace}:{p.namespace}" if namespace and p.namespace else (p.namespace or namespace)
                walk(p.url_patterns, prefix + str(p.pattern), ns)
            elif isinstance(p, URLPattern):
                path = prefix + str(p.pattern)
                key = f"{namespace}:{p.name}" if namespace and p.name else (p.name or path)
                out[key] = (path, namespace)

    walk(get_resolver().url_patterns, "", None)
    return out


ALL_ROWS = {**ROUTES, **ADMIN_ROWS}
CASES = [(name, persona, kind) for name in ALL_ROWS for persona in PERSONAS for kind in ("read", "write")]


def test_every_route_has_a_row():
    routes = url_conf_routes()
    ours = {name for name, (_, namespace) in routes.items() if namespace != ADMIN_NAMESPACE}
    missing = sorted(ours - set(ROUTES))
    stale = sorted(set(ROUTES) - ours)
    stale_admin = sorted(set(ADMIN_ROWS) - set(routes))
    problems = [f"routes with no row in tests/test_access_matrix.py ROUTES: {missing}"] if missing else []
    problems += [f"rows in ROUTES for routes that no longer exist: {stale}"] if stale else []
    problems += [f"rows in ADMIN_ROWS for admin routes that no longer exist: {stale_admin}"] if stale_admin else []
    assert not problems, "\n".join(problems)
    for name, row in ALL_ROWS.items():
        for kind in ("read", "write"):
            assert set(getattr(row, kind)) == set(PERSONAS), f"{name} {kind}: give every persona an outcome"


# ----------------------------------------------------------------------------- the world, once


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """Study A with every kind of row, a study B of another researcher with its own rater, and the nine
    personas logged in once; rolled back when the module ends."""
    with django_db_blocker.unblock(), transaction.atomic():
        w = build_world()
        w["sessions"] = {}
        for persona in (*LOGGED_IN, *FORMER_RATERS):
            client = Client()
            client.force_login(w[persona])
            w["sessions"][persona] = client.cookies[settings.SESSION_COOKIE_NAME].value
        yield w
        transaction.set_rollback(True)


def build_world() -> dict:
    def user(name, **extra):
        return UserFactory(username=f"matrix-{name}", email=f"{name}@example.org", **extra)

    w = {p: user(p) for p in LOGGED_IN if p != "staff"}
    w["staff"] = user("staff", is_staff=True)
    for name in RESEARCHER_ROLE:
        rater_services.researcher_add(user=w[name])
    a = w["study"] = StudyFactory(owner=w["owner"], title="Study A")
    b = w["other_study"] = StudyFactory(owner=w["other_researcher"], title="Study B")
    rater_services.coresearcher_add(study=a, actor=w["owner"], email=w["coresearcher"].email)
    MembershipFactory(study=a, user=w["rater"], role=Role.RATER)
    MembershipFactory(study=a, user=w["adjudicator"], role=Role.ADJUDICATOR)
    MembershipFactory(study=b, user=w["other_rater"], role=Role.RATER)
    for name in FORMER_RATERS:
        w[name] = user(name)
        MembershipFactory(study=a, user=w[name], role=Role.RATER)
    for s in (a, b):
        arms = [ArmFactory(study=s, label="fine-tuned"), ArmFactory(study=s, label="baseline")]
        for prompt in PromptFactory.create_batch(2, study=s):
            for arm in arms:
                ResponseFactory(prompt=prompt, arm=arm)
        s.ratings_per_response = 1
        s.save(update_fields=["ratings_per_response"])
        # A gold item: a calibration item that does not hold the raters up at a calibration step.
        CalibrationItem.objects.create(study=s, messages=[{"role": "user", "content": "Gold?"}],
                                       response_text="Yes.", references={"empathy": 5, "fluency": 5},
                                       rationale="r", created_by=s.owner, use_as_gold=True)
        version = rater_services.consent_publish(study=s, text="Consent.", withdrawal_policy="exclude")
        for rater in [w["rater"], *(w[name] for name in FORMER_RATERS)] if s is a else [w["other_rater"]]:
            rater_services.consent_accept(study=s, user=rater, version=version)
    w["arm"] = a.arms.order_by("id").first()
    w["calibration_item"] = a.calibration_items.get()
    rater_services.study_open_for_rating(study=a)
    rater_services.study_open_for_rating(study=b)
    # A pairwise phase open in both, before anyone left: the former raters had pairs in their queues too.
    for s in (a, b):
        rater_services.pair_phase_save(study=s, criteria=[{"key": "empathy", "question": "More empathetic?"}],
                                       judgments_per_pair=3, gold_rate=0.0, reason="optional")
        rater_services.pair_phase_open(study=s)
    rater_services.consent_withdraw(study=a, user=w["withdrawn_rater"])
    rater_services.rater_exclude(study=a, rater=w["excluded_rater"], reason="careless", actor=w["owner"])
    # The rater's first item, and one response of A already rated (what adjudication pages show).
    w["assigned"] = a.assignments.filter(rater=w["rater"], response__isnull=False).order_by("position").first().response
    w["rated"] = Response.objects.filter(prompt__study=a).exclude(id=w["assigned"].id).order_by("id").first()
    RatingFactory(response=w["rated"], rater=w["rater"], empathy=2)
    # The rater's next pair: what the compare page shows and its submit names; adjudicators may open it.
    w["pair"] = a.pair_assignments.filter(rater=w["rater"], completed_at__isnull=True).order_by("position").first().pair
    w["generation_run"] = GenerationRun.objects.create(study=a, created_by=w["owner"], total=0, status="failed")
    w["training_run"] = TrainingRun.objects.create(study=a, created_by=w["owner"], name="t", config={"base": "bundled"},
                                                   out_dir="/nonexistent", status="failed")
    w["adapter"] = Adapter.objects.create(name="a", created_by=w["owner"], training_run=w["training_run"],
                                          path="/nonexistent", base_ref="bundled", base_sha256="0" * 64,
                                          adapter_sha256="0" * 64, train_losses=[[1, 2.0]],
                                          loss_curve=[{"step": 1, "val_loss": 2.1}])
    w["playground"] = PlaygroundRequest.objects.create(study=a, created_by=w["owner"],
                                                       messages=[{"role": "user", "content": "Hi"}])
    w["judge"] = judge_create(study=a, user=w["owner"], name="matrix-judge", kind="local", model="bundled")
    w["judge_run"] = JudgeRun.objects.create(study=a, judge=w["judge"], created_by=w["owner"], status="failed")
    _, w["token"] = rater_services.invitation_create(study=a, created_by=w["owner"], role=Role.RATER)
    w["panel_link"] = rater_services.panel_link_save(study=a, actor=w["owner"], values={
        "preset": "prolific", "code_completed": "C1", "code_screened_out": "S1"})
    return w


# ----------------------------------------------------------------------------- requests and outcomes


def client_for(w, persona) -> Client:
    """A client that passes the CSRF check as a browser does (cookie + header), logged in as `persona`."""
    client = Client(enforce_csrf_checks=True, raise_request_exception=False, HTTP_X_CSRFTOKEN=CSRF_SECRET)
    client.cookies[settings.CSRF_COOKIE_NAME] = CSRF_SECRET
    if persona != "anonymous":
        client.cookies[settings.SESSION_COOKIE_NAME] = w["sessions"][persona]
    return client


def url_of(name, row, w, **override) -> str:
    kwargs = {**(row.kwargs or study())(w), **override}
    if name == "favicon.ico":
        return "/favicon.ico"
    return reverse(name, kwargs=kwargs)


def send(w, persona, name, row, kind, url=None):
    client = client_for(w, persona)
    url = url or url_of(name, row, w)
    if kind in ("read", "head", "options"):
        return getattr(client, "get" if kind == "read" else kind)(url)
    data = row.data(w) if row.data else {}
    if row.json:
        return getattr(client, row.method)(url, data, content_type="application/json")
    if row.method == "post":
        return client.post(url, data)
    return getattr(client, row.method)(url, data, content_type="application/x-www-form-urlencoded")


LOGIN_PATHS = (reverse("login"), reverse("admin:login"))


def outcome(response) -> str:
    code = response.status_code
    if code == 500:
        return "error 500"
    if 300 <= code < 400:
        location = urlsplit(response["Location"])
        # login_required and the admin send to the login page with ?next=; a logout lands there without.
        return LOGIN if location.path in LOGIN_PATHS and "next=" in location.query else OK
    detail = (getattr(response, "data", None) or {}).get("detail") if hasattr(response, "data") else None
    if code == 401 or (code == 403 and getattr(detail, "code", None) == "not_authenticated"):
        return LOGIN  # DRF's answer to no credentials
    if code < 300 or code in (400, 409, 410):  # a refusal of the body, not of the user
        return OK
    return {403: FORBIDDEN, 404: NOT_FOUND, 405: NO_METHOD}.get(code, f"status {code}")


def _export_audit(sql: str) -> bool:
    # A download of an export is audited (evalapp.exports): the one write a GET is meant to make.
    return sql.lstrip().startswith('INSERT INTO "evalapp_auditevent"') and "'export." in sql


def writes_of(queries) -> list[str]:
    return [q["sql"][:120] for q in queries
            if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
            and not any(t in q["sql"] for t in BOOKKEEPING_TABLES) and not _export_audit(q["sql"])]


@pytest.mark.parametrize(("name", "persona", "kind"), CASES, ids=[f"{n}-{p}-{k}" for n, p, k in CASES])
def test_access(world, db, name, persona, kind):
    row = ALL_ROWS[name]
    with CaptureQueriesContext(connection) as queries:
        response = send(world, persona, name, row, kind)
    got = outcome(response)
    expected = getattr(row, kind)[persona]
    assert got == expected, (f"{name} ({kind}, {row.method.upper() if kind == 'write' else 'GET'}) as {persona}: "
                             f"expected {expected}, got {got} ({response.status_code})")
    if kind == "read" and (name, persona) not in WRITING_READS:
        assert not writes_of(queries), f"GET {name} as {persona} wrote: {writes_of(queries)}"


# ----------------------------------------------------------------------------- ids don't leak

STUDY_ROUTES = [name for name, (path, _) in url_conf_routes().items() if "<int:study_id>" in path and name in ROUTES]
HIDDEN_FROM = ("outsider", "other_rater", "other_researcher", "staff")
GHOST_CASES = [(n, p, k) for n in STUDY_ROUTES for p in HIDDEN_FROM for k in ("read", "write")]
GHOST_CASES += [(n, "outsider", k) for n in STUDY_ROUTES for k in ("head", "options")]  # the other methods


@pytest.mark.parametrize(("name", "persona", "kind"), GHOST_CASES, ids=[f"{n}-{p}-{k}" for n, p, k in GHOST_CASES])
def test_a_hidden_study_answers_as_a_missing_one(world, db, name, persona, kind):
    """Whoever has no role in study A can't tell it from a study id that was never used."""
    row = ROUTES[name]
    real = send(world, persona, name, row, kind)
    ghost = send(world, persona, name, row, kind, url=url_of(name, row, world, study_id=GHOST_STUDY_ID))
    assert (real.status_code, outcome(real)) == (ghost.status_code, outcome(ghost)), (
        f"{name} ({kind}) as {persona}: study A answers {real.status_code}, a missing study {ghost.status_code}")
    assert outcome(real) in (NOT_FOUND, NO_METHOD), f"{name} ({kind}) as {persona}: {real.status_code}"


WITHDRAWN_CASES = [(n, k) for n in STUDY_ROUTES for k in ("read", "write")]


@pytest.mark.parametrize(("name", "kind"), WITHDRAWN_CASES, ids=[f"{n}-{k}" for n, k in WITHDRAWN_CASES])
def test_a_withdrawn_rater_is_an_outsider(world, db, name, kind):
    row = ROUTES[name]
    got = outcome(send(world, "withdrawn_rater", name, row, kind))
    expected = getattr(row, kind)["outsider"]
    assert got == expected, f"{name} ({kind}) as a withdrawn rater: expected {expected} as an outsider gets, got {got}"


def test_an_excluded_rater_rates_no_more_but_may_withdraw(world, db):
    got = {(name, kind): outcome(send(world, "excluded_rater", name, ROUTES[name], kind))
           for name in RATING_ROUTES for kind in ("read", "write") if getattr(ROUTES[name], kind)["rater"] == OK}
    assert set(got.values()) == {NOT_FOUND}, got
    assert outcome(send(world, "excluded_rater", "withdraw", ROUTES["withdraw"], "write")) == OK


OBJECT_CASES = [(n, k) for n, row in ROUTES.items() if row.objects for k in ("read", "write")]


@pytest.mark.parametrize(("name", "kind"), OBJECT_CASES, ids=[f"{n}-{k}" for n, k in OBJECT_CASES])
def test_objects_of_another_study_are_hidden(world, db, name, kind):
    """Study A's runs, arms, items and raters under study B's URL, asked for by who holds the same role
    in B (B's owner, or B's rater on a rater's page): 404, as for an id that does not exist."""
    row = ROUTES[name]
    # B's rater stands in for A's rater on a rater's route, B's owner for A's owner on any other.
    raters_route = OK in (row.read["rater"], row.write["rater"])
    in_a, persona = ("rater", "other_rater") if raters_route else ("owner", "other_researcher")
    url = url_of(name, row, world, study_id=world["other_study"].id)
    response = send(world, persona, name, row, kind, url=url)
    # Where A's own member is let in, B's gets 404; where A's is refused the method, so is B's.
    expected = NOT_FOUND if getattr(row, kind)[in_a] == OK else getattr(row, kind)[in_a]
    assert outcome(response) == expected, (f"{name} ({kind}) as {persona} with study A's "
                                           f"{', '.join(row.objects)} under study B: got {response.status_code}")


def test_the_writes_above_went_through_the_csrf_check(world, db):
    """The matrix's writes carry the token as a browser does; without it the same write is refused, so
    the check is on and the outcomes above are those of requests that passed it."""
    url = reverse("study_settings", kwargs={"study_id": world["study"].id})
    with_token = client_for(world, "owner").post(url, {})
    bare = Client(enforce_csrf_checks=True, raise_request_exception=False)
    bare.cookies[settings.SESSION_COOKIE_NAME] = world["sessions"]["owner"]
    assert with_token.status_code == 400 and bare.post(url, {}).status_code == 403
