"""The benchmarks' floor: a trivial login-required view next to the site's own URLs.

bench/rating.py serves it in-process (ROOT_URLCONF=bench.floor); bench/load.py serves it from gunicorn
through bench/floor_settings.py. One definition, so both compare against the same request.
"""

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.urls import include, path


@login_required
def trivial(request):
    return HttpResponse("ok")


urlpatterns = [path("trivial/", trivial), path("", include("evalapp.urls"))]

# The site's own answer to an exception (503 while the database is unreachable).
handler500 = "evalapp.views.errors.server_error"
