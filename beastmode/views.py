"""Where an operator lands: `/` is the dashboard for staff, the admin login for others."""

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect


@staff_member_required  # others go to the admin login, with ?next=/ to come back here
def home(request: HttpRequest) -> HttpResponse:
    return redirect("monitoring")
