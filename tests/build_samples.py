"""Rebuild the bundled sample corpus (`make run` ingests it into an empty knowledge base).

The documents describe a fictional company, Northwind Robotics, so a new user can ask
questions whose answers sit on known pages. Run: `.venv/bin/python tests/build_samples.py`.
"""

from __future__ import annotations

from pathlib import Path

from docx import Document as DocxDocument
from fpdf import FPDF

HERE = Path(__file__).resolve().parent.parent / "samples"

HANDBOOK = [
    (
        "Northwind Robotics Employee Handbook",
        "Welcome to Northwind Robotics. This handbook describes the policies that apply to every "
        "employee of Northwind Robotics GmbH and its subsidiaries. It was last revised in March 2026 "
        "by the People team. Where a local employment contract says something different, the "
        "contract applies.\n\n"
        "Our offices are in Hamburg (headquarters), Lyon and Toronto. Core hours are 10:00 to 15:00 "
        "local time; outside core hours, employees plan their own working time.",
    ),
    (
        "Paid time off",
        "Full-time employees receive 28 days of paid vacation per calendar year. Part-time "
        "employees receive a share in proportion to their contracted hours. Up to 5 unused vacation "
        "days may be carried over into the first quarter of the next year; days not taken by 31 March "
        "expire.\n\n"
        "Sick leave does not count against vacation. An employee who is ill for more than three "
        "consecutive days sends a doctor's note to the People team.\n\n"
        "Parental leave: every parent may take up to 16 weeks of fully paid parental leave within "
        "the first year after a birth or adoption.",
    ),
    (
        "Equipment and security",
        "Every employee receives a laptop, which must use full-disk encryption and a password of at "
        "least 14 characters. Lost or stolen equipment is reported to security@northwind.example "
        "within 24 hours.\n\n"
        "Robots from the test lab never leave the building without a signed loan form from the lab "
        "manager. The lab is open from 07:00 to 20:00; safety glasses are required at all times.",
    ),
]

FAQ = """# Northwind R2 Warehouse Robot: Frequently Asked Questions

## What payload can the R2 carry?
The R2 carries up to 150 kg on its top deck, or 90 kg when the lifting arm is extended.

## How long does the battery last?
A full charge lasts about 10 hours of mixed driving and lifting. Charging from empty to 80%
takes 45 minutes on the standard dock.

## Which floors does it drive on?
Sealed concrete, epoxy and industrial tiles. Slopes up to 5 degrees are supported; it does not
climb stairs.

## How is it updated?
Firmware updates are delivered over the air every six weeks. Each robot downloads the update
while docked and installs it during the next scheduled maintenance window.
"""

RELEASE_NOTES = """<!DOCTYPE html>
<html><head><title>Fleet Manager 4.2 release notes</title>
<style>body { font-family: sans-serif; }</style>
<script>console.log("analytics");</script></head>
<body>
<h1>Fleet Manager 4.2 release notes</h1>
<p>Released on 14 October 2026.</p>
<h2>New</h2>
<ul>
<li>Route planning now avoids aisles that are marked as blocked in the floor plan.</li>
<li>Battery reports show the expected remaining hours for every robot in the fleet.</li>
</ul>
<h2>Fixed</h2>
<ul>
<li>Robots no longer stop at charging docks that are already occupied.</li>
<li>The maximum fleet size per site was raised from 200 to 500 robots.</li>
</ul>
</body></html>
"""

EXPENSES = [
    "Northwind Robotics travel and expense policy",
    "Employees book travel through the company travel portal. Train travel is preferred for trips under 600 km.",
    "Hotel costs are reimbursed up to 180 euros per night in Hamburg, Lyon and Toronto, and up "
    "to 150 euros per night elsewhere.",
    "Meals on business trips are covered by a daily allowance of 45 euros.",
    "Expense reports are submitted within 30 days of the end of a trip, with receipts attached.",
]


def build_handbook(path: Path) -> None:
    pdf = FPDF()
    pdf.set_title("Northwind Robotics Employee Handbook")
    for heading, body in HANDBOOK:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 16)
        pdf.multi_cell(0, 10, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=11)
        for paragraph in body.split("\n\n"):
            pdf.multi_cell(0, 6, paragraph, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
    pdf.output(str(path))


def build_expenses(path: Path) -> None:
    document = DocxDocument()
    document.core_properties.title = EXPENSES[0]
    document.add_heading(EXPENSES[0], level=1)
    for paragraph in EXPENSES[1:]:
        document.add_paragraph(paragraph)
    document.save(str(path))


def main() -> None:
    build_handbook(HERE / "employee-handbook.pdf")
    build_expenses(HERE / "travel-expense-policy.docx")
    (HERE / "r2-robot-faq.md").write_text(FAQ, encoding="utf-8")
    (HERE / "fleet-manager-4.2-release-notes.html").write_text(RELEASE_NOTES, encoding="utf-8")


if __name__ == "__main__":
    main()
