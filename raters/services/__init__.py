"""Writes for raters, one module per area; the names below are the package's public face.

invitations (links, accept once), accounts (pseudonymous codes in bulk), consent (publish, accept,
withdraw), calibration (attempts, the researcher's decision), design (the stored rating design and
its targets), ratings (submit, skip), welfare and distress (the settings, the notice shown at consent,
breaks, caps, skipping a distressing item), exclusion (a researcher's quality decision), researchers (the
role that may create studies, granted by an administrator), panel (participant pools: entry, codes,
idle and returned participants, pay). Every area that
changes who may rate calls design.design_rebalance(); none imports evalapp's views, API or
adjudication (those sit above raters).
"""

from ..selectors import eligible_raters
from .accounts import CODE_PATTERN, CODES_MAX_BYTES, BulkAccountsResult, rater_accounts_bulk_create
from .calibration import (
    calibration_answer,
    calibration_attempt_start,
    calibration_decide,
    calibration_item_remove,
    calibration_pool,
)
from .common import RatingError, parse_answers
from .consent import consent_accept, consent_publish, consent_withdraw
from .design import DesignTargets, design_rebalance, design_targets, study_open_for_rating
from .exclusion import rater_exclude
from .groups import rater_groups_set
from .invitations import (
    invitation_accept,
    invitation_create,
    invitation_for_token,
    invitations_create_from_list,
    new_pseudonym,
)
from .panel import (
    panel_complete,
    panel_enter,
    panel_link_save,
    panel_release_idle,
    panel_submissions_import,
)
from .panel_pay import panel_pay_rows
from .ratings import Submission, assignment_skip, item_query, rating_submit, rating_submit_then
from .pairwise import (
    PairSubmission,
    gold_pair_add,
    pair_design_rebalance,
    pair_judgment_submit,
    pair_phase_close,
    pair_phase_open,
    pair_phase_save,
    pair_skip,
)
from .distress import distress_report
from .notice import consent_accept_noticed, notice_record
from .welfare import (
    DISTRESS_SKIP,
    break_taken,
    cap_message,
    distress_summary,
    notice_topics,
    rater_state,
    rater_state_query,
    welfare_limits,
    welfare_report,
    welfare_save,
    welfare_settings,
    welfare_shown,
)
from .researchers import (
    coresearcher_add,
    coresearcher_remove,
    is_researcher,
    researcher_add,
    researcher_grant,
    researcher_revoke,
)

__all__ = [
    "CODE_PATTERN", "CODES_MAX_BYTES", "BulkAccountsResult", "DesignTargets", "RatingError", "Submission", "assignment_skip",
    "calibration_answer", "calibration_item_remove", "calibration_pool", "coresearcher_add", "coresearcher_remove", "calibration_attempt_start", "calibration_decide", "parse_answers", "consent_accept",
    "consent_publish", "consent_withdraw", "design_rebalance", "design_targets", "eligible_raters",
    "invitation_accept", "invitation_create", "invitation_for_token", "invitations_create_from_list", "is_researcher",
    "new_pseudonym", "rater_accounts_bulk_create", "rater_exclude", "rater_groups_set", "rating_submit", "rating_submit_then", "item_query", "researcher_add", "researcher_grant",
    "researcher_revoke", "study_open_for_rating", "PairSubmission", "gold_pair_add", "pair_design_rebalance",
    "pair_judgment_submit", "pair_phase_close", "pair_phase_open", "pair_phase_save", "pair_skip",
    "panel_complete", "panel_enter", "panel_link_save", "panel_pay_rows", "panel_release_idle",
    "panel_submissions_import",
    "DISTRESS_SKIP", "break_taken", "cap_message", "distress_report", "distress_summary", "notice_record", "consent_accept_noticed",
    "notice_topics", "rater_state", "rater_state_query", "welfare_limits", "welfare_report", "welfare_save",
    "welfare_settings", "welfare_shown",
]
