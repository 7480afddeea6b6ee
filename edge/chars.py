"""Characters that show otherwise than typed: one definition for paper (edge.printing.text), mail and the config's
checks (a store name), below every layer like edge.errors."""

from __future__ import annotations

import re

# C0 (with \n \r \t), DEL and C1: any of them in order text could start a printer command.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # a line or paragraph separator too: a space
# Direction marks, embeddings, overrides and isolates: they turn the text after them around on a screen.
DIRECTION = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
