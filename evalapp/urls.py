from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from . import adjudication_views, generation_views, results_views, views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="study_list"), name="home"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("evalapp.api_urls")),
    path("", include("raters.urls")),
    path("studies/", views.study_list, name="study_list"),
    path("studies/<int:study_id>/", views.study_detail, name="study_detail"),
    path("studies/<int:study_id>/import/", views.study_import, name="study_import"),
    path("studies/<int:study_id>/settings/", views.study_settings, name="study_settings"),
    path("studies/<int:study_id>/arms/", generation_views.arm_add, name="arm_add"),
    path("studies/<int:study_id>/generation/", generation_views.generation_start, name="generation_start"),
    path("studies/<int:study_id>/generation/runs/", generation_views.generation_runs_fragment, name="generation_runs_fragment"),
    path(
        "studies/<int:study_id>/generation/runs/<int:run_id>/resume/",
        generation_views.generation_resume,
        name="generation_resume",
    ),
    path("studies/<int:study_id>/adjudication/", adjudication_views.queues, name="adjudication_queues"),
    path("studies/<int:study_id>/adjudication/history/", adjudication_views.history, name="adjudication_history"),
    path("studies/<int:study_id>/adjudication/<str:public_id>/", adjudication_views.item, name="adjudication_item"),
    path(
        "studies/<int:study_id>/adjudication/<str:public_id>/decide/",
        adjudication_views.decide,
        name="adjudication_decide",
    ),
    path("studies/<int:study_id>/results/", results_views.results, name="results"),
    path("studies/<int:study_id>/results.json", results_views.results_json, name="results_json"),
    path("studies/<int:study_id>/results/plots/<str:name>.<str:fmt>", results_views.results_plot, name="results_plot"),
    path("studies/<int:study_id>/export/<str:name>.csv", results_views.export_csv, name="export_csv"),
    path("studies/<int:study_id>/export.zip", results_views.export_zip, name="export_zip"),
    path("studies/<int:study_id>/training/", generation_views.training_start, name="training_start"),
    path("studies/<int:study_id>/training/runs/", generation_views.training_runs_fragment, name="training_runs_fragment"),
    path(
        "studies/<int:study_id>/training/runs/<int:run_id>/resume/",
        generation_views.training_resume,
        name="training_resume",
    ),
    path("adapters/", generation_views.adapter_list, name="adapter_list"),
    path("adapters/<int:adapter_id>/", generation_views.adapter_detail, name="adapter_detail"),
    path("adapters/<int:adapter_id>/loss.png", generation_views.adapter_loss_plot, name="adapter_loss_plot"),
    path("studies/<int:study_id>/playground/", generation_views.playground, name="playground"),
    path(
        "studies/<int:study_id>/playground/<int:request_id>/",
        generation_views.playground_item,
        name="playground_item",
    ),
]
