from django.urls import path

from . import pair_views, researcher_views, views, welfare_views

urlpatterns = [
    path("invite/<str:token>/", views.invitation_accept, name="invitation_accept"),
    path("staff/researchers/", researcher_views.staff_researchers, name="staff_researchers"),
    path("studies/<int:study_id>/researchers/", researcher_views.study_researchers, name="study_researchers"),
    path("studies/<int:study_id>/researchers/change/", researcher_views.study_researcher_change,
         name="study_researcher_change"),
    path("studies/<int:study_id>/consent/", views.consent, name="consent"),
    path("studies/<int:study_id>/withdraw/", views.withdraw, name="withdraw"),
    path("studies/<int:study_id>/calibration/", views.calibration, name="calibration"),
    path("studies/<int:study_id>/rate/", views.rate, name="rate"),
    path("studies/<int:study_id>/break/", welfare_views.welfare_break, name="welfare_break"),
    path("studies/<int:study_id>/rate/<str:public_id>/", views.rate_submit, name="rate_submit"),
    path("studies/<int:study_id>/rate/<str:public_id>/distress/", welfare_views.rate_distress, name="rate_distress"),
    path("studies/<int:study_id>/compare/", pair_views.compare, name="compare"),
    path("studies/<int:study_id>/compare/<str:public_id>/", pair_views.compare_submit, name="compare_submit"),
    path("studies/<int:study_id>/compare/<str:public_id>/distress/", welfare_views.compare_distress,
         name="compare_distress"),
    path("studies/<int:study_id>/support/", welfare_views.support, name="support"),
    path("studies/<int:study_id>/welfare/", welfare_views.welfare_page, name="welfare_page"),
    path("studies/<int:study_id>/raters/", views.raters_page, name="raters_page"),
    path("studies/<int:study_id>/raters/invite/", views.raters_invite, name="raters_invite"),
    path("studies/<int:study_id>/raters/codes/", views.raters_bulk_codes, name="raters_bulk_codes"),
    path("studies/<int:study_id>/raters/consent/", views.consent_publish, name="consent_publish"),
    path("studies/<int:study_id>/raters/calibration/", views.calibration_item_add, name="calibration_item_add"),
    path("studies/<int:study_id>/raters/calibration/<str:public_id>/remove/", views.calibration_item_remove,
         name="calibration_item_remove"),
    path("studies/<int:study_id>/raters/<int:user_id>/decide/", views.rater_decide, name="rater_decide"),
    path("studies/<int:study_id>/open/", views.open_for_rating, name="open_for_rating"),
]
