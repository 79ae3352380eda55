from django.contrib import admin
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from raters.panel_views import PanelAwareLoginView

from .views import (adjudication, generation, health, judge_report, judges, pair_results, pairwise, planner, playground,
                    results, studies, training)

# Any exception that escapes a page; a database that cannot be reached answers 503 (views/errors.py).
handler500 = "evalapp.views.errors.server_error"

# Every page below lives under /studies/<study_id>/ and takes study_id first.
study_pages = [
    path("", studies.study_detail, name="study_detail"),
    path("import/", studies.study_import, name="study_import"),
    path("settings/", studies.study_settings, name="study_settings"),
    path("delete/", studies.study_delete_view, name="study_delete"),
    path("rubric/", studies.study_rubric, name="study_rubric"),
    path("arms/", generation.arm_add, name="arm_add"),
    path("generation/", generation.generation_start, name="generation_start"),
    path("generation/runs/", generation.generation_runs_fragment, name="generation_runs_fragment"),
    path("generation/runs/<int:run_id>/resume/", generation.generation_resume, name="generation_resume"),
    path("generation/arms/<int:arm_id>/regenerate-truncated/", generation.generation_regenerate_truncated,
         name="generation_regenerate_truncated"),
    path("training/", training.training_start, name="training_start"),
    path("training/runs/", training.training_runs_fragment, name="training_runs_fragment"),
    path("training/runs/<int:run_id>/resume/", training.training_resume, name="training_resume"),
    path("playground/", playground.playground, name="playground"),
    path("playground/<int:request_id>/", playground.playground_item, name="playground_item"),
    path("adjudication/", adjudication.queues, name="adjudication_queues"),
    path("adjudication/history/", adjudication.history, name="adjudication_history"),
    path("adjudication/pairs/<str:public_id>/", adjudication.pair, name="adjudication_pair"),
    path("adjudication/<str:public_id>/", adjudication.item, name="adjudication_item"),
    path("adjudication/<str:public_id>/decide/", adjudication.decide, name="adjudication_decide"),
    path("pairwise/", pairwise.pairwise_design, name="pairwise_design"),
    path("pairwise/gold/", pairwise.pairwise_gold_add, name="pairwise_gold_add"),
    path("pairwise/status/", pairwise.pairwise_status, name="pairwise_status"),
    path("results/", results.results, name="results"),
    path("results.json", results.results_json, name="results_json"),
    path("results/progress.json", results.results_progress, name="results_progress"),
    path("results/plots/<str:name>.<str:fmt>", results.results_plot, name="results_plot"),
    path("results/pairwise/", pair_results.pairwise_results_page, name="pairwise_results"),
    path("results/pairwise.json", pair_results.pairwise_results_json, name="pairwise_results_json"),
    path("results/pairwise/plots/<str:name>.png", pair_results.pairwise_plot, name="pairwise_plot"),
    path("export/preferences.jsonl", pair_results.preferences_export, name="export_preferences"),
    path("export/<str:name>.csv", results.export_csv, name="export_csv"),
    path("export.zip", results.export_zip, name="export_zip"),
    path("judges/", judges.judges, name="judges"),
    path("judges/list/", judges.judges_fragment, name="judges_fragment"),
    path("judges/<int:judge_id>/runs/", judges.judge_run_start, name="judge_run_start"),
    path("judges/runs/<int:run_id>/resume/", judges.judge_run_resume_view, name="judge_run_resume"),
    path("plan/", planner.planner, name="planner"),
    path("plan/plot.png", planner.planner_plot, name="planner_plot"),
    path("judges/<int:judge_id>/report/", judge_report.judge_report_page, name="judge_report"),
    path("judges/<int:judge_id>/report/plots/<str:key>.png", judge_report.judge_report_plot,
         name="judge_report_plot"),
]

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="study_list"), name="home"),
    path("healthz", health.healthz, name="healthz"),
    # Pages without an icon link (the browsable API) make browsers ask for this one.
    path("favicon.ico", lambda request: redirect(static("evalapp/favicon.svg"), permanent=True)),
    # A timed-out pool participant has no password: the login sends them to what happened instead.
    path("accounts/login/", PanelAwareLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("evalapp.api_urls")),
    path("", include("raters.urls")),
    path("studies/", studies.study_list, name="study_list"),
    path("studies/new/", studies.study_new, name="study_new"),
    path("studies/<int:study_id>/clone/", studies.study_clone_view, name="study_clone"),
    path("studies/<int:study_id>/", include(study_pages)),
    path("adapters/", training.adapter_list, name="adapter_list"),
    path("adapters/<int:adapter_id>/", training.adapter_detail, name="adapter_detail"),
    path("adapters/<int:adapter_id>/loss.png", training.adapter_loss_plot, name="adapter_loss_plot"),
]
