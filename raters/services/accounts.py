"""Pseudonymous rater accounts made in bulk from a CSV of codes (for classes and panels)."""

import csv
import io
import re
import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from evalapp.models import Study

from ..models import Role, StudyMembership
from .design import design_rebalance

CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,63}$")
# 66 bytes a code at most: room for some 15,000 codes, far beyond a class or a panel.
CODES_MAX_BYTES = 1_000_000


@dataclass
class BulkAccountsResult:
    accounts: list[tuple[str, str]]  # (code, password), shown once
    errors: list[str]


def rater_accounts_bulk_create(*, study: Study, data: bytes) -> BulkAccountsResult:
    """Pseudonymous rater accounts from a CSV with a `code` column: all or nothing."""
    if len(data) > CODES_MAX_BYTES:
        return BulkAccountsResult([], [f"The file is {len(data):,} bytes; the limit is {CODES_MAX_BYTES:,}."])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return BulkAccountsResult([], ["The file is not UTF-8."])
    # newline="": a line break inside a quoted cell is data, not a csv error.
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if "code" not in [f.strip().lower() for f in (reader.fieldnames or [])]:
            return BulkAccountsResult([], ["Row 1: the file needs a 'code' column."])
        reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
        records = list(reader)
    except csv.Error as exc:
        return BulkAccountsResult([], [f"Row {reader.line_num}: not valid CSV ({exc})."])
    User = get_user_model()
    codes, errors, seen = [], [], {}
    for index, record in enumerate(records, start=2):
        code = (record.get("code") or "").strip()
        if not CODE_PATTERN.match(code):
            errors.append(f"Row {index}: code {code!r} must be 2-64 letters, digits, '.', '_' or '-'.")
        elif code.lower() in seen:
            errors.append(f"Row {index}: code {code!r} repeats row {seen[code.lower()]}.")
        else:
            seen[code.lower()] = index
            codes.append(code)
    existing = set(User.objects.filter(username__in=codes).values_list("username", flat=True))
    errors += [f"Code {code!r} is already an account." for code in codes if code in existing]
    if not codes and not errors:
        errors.append("The file has no codes.")
    if errors:
        return BulkAccountsResult([], errors)
    accounts = []
    with transaction.atomic():
        for code in codes:
            password = secrets.token_urlsafe(9)
            user = User(username=code)
            user.set_password(password)
            user.save()
            StudyMembership.objects.create(study=study, user=user, role=Role.RATER, pseudonym=code)
            accounts.append((code, password))
        design_rebalance(study=study)  # they may rate at once if the study asks no consent or calibration
    return BulkAccountsResult(accounts, [])
