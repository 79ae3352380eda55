from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from . import apis

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api_schema"), name="api_docs"),
    path("studies/", apis.StudyList.as_view(), name="api_studies"),
    path("studies/<int:study_id>/", apis.StudyDetail.as_view(), name="api_study"),
    path("studies/<int:study_id>/clone/", apis.StudyClone.as_view(), name="api_study_clone"),
    path("studies/<int:study_id>/rubric/", apis.StudyRubric.as_view(), name="api_study_rubric"),
    path("presets/", apis.PresetList.as_view(), name="api_presets"),
    path("studies/<int:study_id>/prompts/", apis.PromptList.as_view(), name="api_prompts"),
    path("studies/<int:study_id>/prompts/import/", apis.PromptImport.as_view(), name="api_prompts_import"),
    path("studies/<int:study_id>/arms/", apis.ArmList.as_view(), name="api_arms"),
    path("studies/<int:study_id>/generation-runs/", apis.GenerationRunList.as_view(), name="api_generation_runs"),
    path(
        "studies/<int:study_id>/generation-runs/<int:run_id>/",
        apis.GenerationRunDetail.as_view(),
        name="api_generation_run",
    ),
    path("studies/<int:study_id>/judges/", apis.JudgeList.as_view(), name="api_judges"),
    path("studies/<int:study_id>/rating/next/", apis.RaterNextItem.as_view(), name="api_rating_next"),
    path("studies/<int:study_id>/rating/<str:public_id>/", apis.RaterSubmit.as_view(), name="api_rating_submit"),
    path("studies/<int:study_id>/adjudications/", apis.AdjudicationList.as_view(), name="api_adjudications"),
    path("studies/<int:study_id>/results/", apis.StudyResults.as_view(), name="api_results"),
    path("studies/<int:study_id>/pairwise-results/", apis.StudyPairwiseResults.as_view(), name="api_pairwise_results"),
    path("studies/<int:study_id>/judges/<int:judge_id>/validation/", apis.JudgeValidation.as_view(),
         name="api_judge_validation"),
    path("studies/<int:study_id>/exports/<str:name>.csv", apis.StudyExport.as_view(), name="api_export"),
]
