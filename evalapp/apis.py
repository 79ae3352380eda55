"""The REST API. Same access rules as the pages: every study comes through raters.access (404 for outsiders).
Long because every resource's view is here, one class each, beside the shared query-parameter rule below.

Every view takes only the query parameters it declares (its filter fields, paging on lists, `format`);
any other, `ordering` and `fields` included, is refused with 400 naming the ones allowed, so no `__`
lookup from user input can reach a related table (an annotation tool once leaked password hashes that
way) and a misspelt filter never silently returns everything.
"""

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, OuterRef, Prefetch, Subquery
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response as ApiResponse
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from evalapp.models import Adjudication, Arm, Prompt, Study
from modelserver.models import GenerationRun, Judge, JudgeRun
from modelserver.services import generation_run_create
from raters import selectors as rater_selectors
from raters import services as rater_services
from raters.access import ALL_ROLES, get_study_for, studies_for
from raters.models import Role, StudyMembership
from raters.services.welfare import welfare_gate

from . import serializers as s
from .errors import ServiceError
from .exports.copy_export import export_chunks
from .exports.csv import stream_response
from .exports.tables import EXPORTS
from .judge_results import judge_results, study_judge
from .judge_validation import judge_report
from .pair_results import pairwise_results
from .results import results_state
from .rubric_presets import PRESETS, preset
from .services import study_clone, study_create, study_import_prompts, study_set_rubric

RESEARCHERS = [Role.RESEARCHER]
PAGING_PARAMS = {"page", "page_size"}


def exception_handler(exc, context):
    """DRF's handler, plus: a service's refusal answers with the status and message it carries, and a
    model's own validation (constraints the serializer cannot see) is a 400 naming the fields."""
    if isinstance(exc, ServiceError):
        return ApiResponse({"detail": exc.message}, status=exc.status)
    if isinstance(exc, DjangoValidationError):
        return ApiResponse(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}, status=400)
    return drf_exception_handler(exc, context)


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class StrictQuery:
    """An unknown query parameter is an error rather than silently ignored, on every view (DRF's
    OrderingFilter and most APIs drop what they do not know; here `?ordering=` is simply not offered)."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.check_access()
        allowed = {"format", *getattr(self, "query_params", ())}
        if hasattr(self, "list") and request.method == "GET":
            allowed |= PAGING_PARAMS
        filterset_class = getattr(self, "filterset_class", None)
        if filterset_class is not None:
            allowed |= set(filterset_class.base_filters)
        unknown = sorted(set(request.query_params) - allowed)
        if unknown:
            raise ValidationError({"detail": f"Unknown query parameter(s): {', '.join(unknown)}. "
                                             f"Allowed: {', '.join(sorted(allowed))}."})

    def check_access(self) -> None:
        """Raise what the user may not see before the query is judged (a 400 must not tell a non-member
        that the study exists)."""


class StudyFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Study.Status.choices)
    title = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Study
        fields = ["status", "title"]


class PromptFilter(django_filters.FilterSet):
    topic = django_filters.CharFilter()
    split = django_filters.CharFilter()
    source = django_filters.CharFilter()
    external_id = django_filters.CharFilter()

    class Meta:
        model = Prompt
        fields = ["topic", "split", "source", "external_id"]


class GenerationRunFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=GenerationRun.Status.choices)

    class Meta:
        model = GenerationRun
        fields = ["status"]


class AdjudicationFilter(django_filters.FilterSet):
    scale = django_filters.CharFilter()
    action = django_filters.ChoiceFilter(choices=Adjudication.Action.choices)

    class Meta:
        model = Adjudication
        fields = ["scale", "action"]


class _StudyScoped(StrictQuery):
    study_roles = RESEARCHERS
    pagination_class = Pagination
    filter_backends = [DjangoFilterBackend]

    def check_access(self) -> None:
        # The study before the query, the method and the body: whoever may not see it gets 404 for every
        # request under it, as the pages do, never a 405 or a 400 answered before the access check.
        self.study()

    def study(self) -> Study:
        if not hasattr(self, "_study"):
            self._study = get_study_for(self.request.user, self.kwargs["study_id"], roles=self.study_roles)
        return self._study


class StudyList(StrictQuery, generics.ListCreateAPIView):
    pagination_class = Pagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = StudyFilter

    def get_serializer_class(self):
        return s.StudyCreateSerializer if self.request.method == "POST" else s.StudySerializer

    def get_queryset(self):
        return studies_for(self.request.user).select_related("owner").order_by("-created_at")

    def create(self, request, *args, **kwargs):
        if not rater_services.is_researcher(request.user):
            raise PermissionDenied("Only researchers create studies; an administrator grants the role.")
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        study = study_create(owner=request.user, **serializer.validated_data)
        return ApiResponse(s.StudySerializer(study).data, status=status.HTTP_201_CREATED)


class PresetList(StrictQuery, APIView):
    """The protocol presets a study can start from: criteria, anchors, citation."""

    @extend_schema(responses={200: dict})
    def get(self, request):
        return ApiResponse({key: preset(key) for key in PRESETS})


class StudyRubric(_StudyScoped, APIView):
    """A study's rubric; PUT replaces it while the study is a draft (refused with 409 after)."""

    study_roles = [Role.RESEARCHER]

    @extend_schema(responses={200: s.RubricSerializer})
    def get(self, request, study_id: int):
        return ApiResponse({"criteria": self.study().rubric()})

    @extend_schema(request=s.RubricSerializer, responses={200: s.RubricSerializer})
    def put(self, request, study_id: int):
        form = s.RubricSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        criteria = study_set_rubric(study=self.study(), criteria=form.validated_data["criteria"], actor=request.user)
        return ApiResponse({"criteria": criteria})


class StudyDetail(_StudyScoped, generics.RetrieveAPIView):
    serializer_class = s.StudySerializer
    study_roles = ALL_ROLES

    def get_object(self):
        return self.study()


class StudyClone(_StudyScoped, APIView):
    """A new draft study with this one's design and none of its data; the caller owns it."""

    @extend_schema(request=None, responses=s.StudySerializer)
    def post(self, request, study_id: int):
        study = self.study()
        if not rater_services.is_researcher(request.user):
            raise PermissionDenied("Only researchers create studies; an administrator grants the role.")
        copy = study_clone(study=study, owner=request.user, title=str(request.data.get("title", ""))[:200])
        return ApiResponse(s.StudySerializer(copy).data, status=status.HTTP_201_CREATED)


class PromptList(_StudyScoped, generics.ListAPIView):
    queryset = Prompt.objects.none()  # for the schema; get_queryset scopes to the study
    serializer_class = s.PromptSerializer
    filterset_class = PromptFilter

    def get_queryset(self):
        return self.study().prompts.order_by("id")


class PromptImport(_StudyScoped, APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request=s.PromptImportSerializer, responses={
        201: s.ImportReportSerializer, 200: s.ImportReportSerializer,
        # Two shapes, told apart by "ok": a oneOf of the two would be ambiguous (field errors are an open object).
        400: OpenApiResponse(response=OpenApiTypes.OBJECT, description=(
            "The file was read and refused: its ImportReport (`ok` false, per-row `errors`). The request was "
            "refused before reading a file: each field's messages, e.g. {\"file\": [\"No file was submitted.\"]}."))})
    def post(self, request, study_id: int):
        study = self.study()
        form = s.PromptImportSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        upload = form.validated_data["file"]
        report = study_import_prompts(
            study=study, data=upload.read(), filename=upload.name, split=form.validated_data.get("split") or None,
            sample=form.validated_data.get("sample"), seed=form.validated_data["seed"],
            redact=form.validated_data["redact"],
        )
        body = s.ImportReportSerializer({**report.__dict__, "ok": report.ok, "summary": report.summary()}).data
        code = status.HTTP_400_BAD_REQUEST if not report.ok else (
            status.HTTP_201_CREATED if report.created else status.HTTP_200_OK)
        return ApiResponse(body, status=code)


class ArmList(_StudyScoped, generics.ListAPIView):
    queryset = Arm.objects.none()
    serializer_class = s.ArmSerializer

    def get_queryset(self):
        return self.study().arms.order_by("id")


class GenerationRunList(_StudyScoped, generics.ListCreateAPIView):
    queryset = GenerationRun.objects.none()
    serializer_class = s.GenerationRunSerializer
    filterset_class = GenerationRunFilter

    def get_queryset(self):
        return GenerationRun.objects.filter(study=self.study()).prefetch_related("arms").order_by("-created_at")

    @extend_schema(request=s.GenerationStartSerializer, responses={201: s.GenerationRunSerializer})
    def post(self, request, study_id: int):
        form = s.GenerationStartSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        run = generation_run_create(study=self.study(), user=request.user, **form.validated_data)
        return ApiResponse(s.GenerationRunSerializer(run).data, status=status.HTTP_201_CREATED)


class GenerationRunDetail(_StudyScoped, generics.RetrieveAPIView):
    serializer_class = s.GenerationRunSerializer

    def get_object(self):
        run = GenerationRun.objects.filter(study=self.study(), id=self.kwargs["run_id"]).first()
        if run is None:
            raise NotFound("No such run.")
        return run


class JudgeList(_StudyScoped, generics.ListAPIView):
    """The study's LLM judges with their runs (read-only: judges are added and run on the judges page)."""

    queryset = Judge.objects.none()
    serializer_class = s.JudgeSerializer

    def get_queryset(self):
        runs = Prefetch("runs", queryset=JudgeRun.objects.order_by("-created_at", "-id"))
        return (Judge.objects.filter(study=self.study()).annotate(n_answers=Count("answers"))
                .prefetch_related(runs).order_by("id"))


class RaterNextItem(_StudyScoped, APIView):
    study_roles = [Role.RATER]

    # 429: a welfare break due or a cap reached, as the rate page shows it; until when in `welfare` and Retry-After.
    @extend_schema(responses={200: s.RaterItemSerializer, 204: None, 429: OpenApiResponse(OpenApiTypes.OBJECT)})
    def get(self, request, study_id: int):
        study = self.study()
        rater_status = rater_selectors.rater_status(study=study, user=request.user)
        if not rater_status.can_rate:
            raise NotFound("No items: consent and calibration come first.")
        upcoming = rater_selectors.next_item(study=study, rater=request.user)
        if upcoming.assignment is None:
            return ApiResponse(status=status.HTTP_204_NO_CONTENT)
        if (gate := welfare_gate(study, request.user)) is not None:  # the page too shows it only before an item
            return ApiResponse(gate["body"], status=429, headers={"Retry-After": str(gate["retry_after"])})
        a = upcoming.assignment
        source = a.gold_item if a.gold_item_id else a.response
        item = {
            "public_id": source.public_id,
            "messages": source.messages if a.gold_item_id else source.prompt.messages,
            "text": source.response_text if a.gold_item_id else source.text,
            "done": upcoming.done,
            "total": upcoming.total,
            "criteria": self.study().rubric(),
        }
        return ApiResponse(s.RaterItemSerializer(item).data)


class RaterSubmit(_StudyScoped, APIView):
    study_roles = [Role.RATER]

    @extend_schema(request=s.RatingSubmitSerializer, responses={200: None, 201: None})
    def post(self, request, study_id: int, public_id: str):
        form = s.RatingSubmitSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        outcome = rater_services.rating_submit(
            study=self.study(), rater=request.user, item_public_id=public_id,
            submission=rater_services.Submission(**form.validated_data),
        )
        return ApiResponse({"outcome": outcome}, status=201 if outcome == "created" else 200)


class AdjudicationList(_StudyScoped, generics.ListAPIView):
    queryset = Adjudication.objects.none()
    serializer_class = s.AdjudicationSerializer
    filterset_class = AdjudicationFilter
    study_roles = [Role.RESEARCHER, Role.ADJUDICATOR]

    def get_queryset(self):
        study = self.study()
        pseudonym = StudyMembership.objects.filter(study=study, user=OuterRef("adjudicator_id")).exclude(pseudonym="")
        return (Adjudication.objects.filter(response__prompt__study=study)
                .annotate(adjudicator_pseudonym=Subquery(pseudonym.values("pseudonym")[:1]))
                .select_related("response", "adjudicator").order_by("id"))


class ResultsQuery(django_filters.FilterSet):
    """The results' one query parameter (read by the view; StrictQuery allows what a filterset declares)."""

    judge = django_filters.NumberFilter()


class StudyResults(_StudyScoped, APIView):
    """Agreement and the model comparison per scale (the results page's numbers); with `?judge=<id>`, also
    that judge's arm comparison under `judge_comparison` (the judge as the only rater, never mixed in)."""

    filterset_class = ResultsQuery

    @extend_schema(responses={200: dict, 202: dict}, parameters=[OpenApiParameter(
        "judge", int, description="A judge of the study: add its arm comparison under judge_comparison.")])
    def get(self, request, study_id: int):
        study = self.study()
        wanted = request.query_params.get("judge")
        judge = None if wanted is None else study_judge(study, wanted)
        if wanted is not None and judge is None:
            raise NotFound("No such judge in this study.")
        # Rows only (evalapp.results): 202 with the progress until the first computation has finished.
        data, status = results_state(study).as_json()
        if judge is None or status != 200:
            return ApiResponse(data, status=status)
        return ApiResponse({**data, "judge_comparison": judge_results(study, judge)})


class StudyPairwiseResults(_StudyScoped, APIView):
    """The pairwise phase's numbers (the pairwise results page's): per question, each pair of arms'
    win/tie/loss, strengths, position bias, agreement, and the agreement with the 1-10 scores."""

    @extend_schema(responses={200: s.PairwiseResultsSerializer})
    def get(self, request, study_id: int):
        return ApiResponse(pairwise_results(self.study()))


class JudgeValidation(_StudyScoped, APIView):
    """One judge's validation report (its report page's numbers): per criterion, the judge against each
    rater group and the human ceiling, the verdict, inflation and Bland-Altman data; the unsafe flag's
    recall and precision; pairwise agreement and swap consistency. `expert` names the expert group."""

    query_params = ("expert",)

    @extend_schema(responses={200: dict}, parameters=[OpenApiParameter(
        "expert", str, description="The rater group the verdict is measured against (default: the first named "
                                   "psycholog... or expert..., else the largest).")])
    def get(self, request, study_id: int, judge_id: int):
        judge = Judge.objects.filter(study=self.study(), id=judge_id).select_related("study").first()
        if judge is None:
            raise NotFound("No such judge.")
        return ApiResponse(judge_report(judge, expert=request.query_params.get("expert") or None))


class StudyExport(_StudyScoped, APIView):
    """Ratings (long form), responses with provenance, or the audit trail, as streamed CSV."""

    @extend_schema(responses={(200, "text/csv"): str})
    def get(self, request, study_id: int, name: str):
        if name not in EXPORTS:
            raise NotFound("No such export: use ratings, responses or audit.")
        chunks = export_chunks(study=self.study(), name=name, actor=request.user)
        return stream_response(chunks, f"study-{study_id}-{name}.csv")
