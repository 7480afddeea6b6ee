"""Alert mails in German and English: subject, text and HTML parts from jinja2 templates an operator may override."""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from edge.clock import RemoteClock, repeated_hour, store_time
from edge.store.alerts import Mail

if TYPE_CHECKING:
    import jinja2

LABELS: dict[str, dict[str, Any]] = {
    "de": {
        "firing": "STÖRUNG",
        "reminder": "ERINNERUNG",
        "resolved": "BEHOBEN",
        "critical": "(kritisch)",
        "test": "TEST",
        "digest": "TAGESÜBERSICHT",
        "what": "Was ist passiert",
        "since": "Seit",
        "until": "Bis",
        "untold": "Dazu ging vorher keine Störungsmeldung: es war vorbei, bevor jemand benachrichtigt werden konnte.",
        "affected": "Betroffen",
        "detail": "Letzte Meldung",
        "detail_technical": "Technische Meldung (englisch)",  # the device's or the agent's own words, not the mail's
        "todo": "Was tun",
        "extra": "Seit der letzten Mail {n} weitere Male.",
        "extra_one": "Seit der letzten Mail ein weiteres Mal.",
        "minutes": "{n} Minuten",
        "minutes_one": "1 Minute",
        "status_page": "Statusseite",
        "footer": "{store} ({id}) – automatische Nachricht des Edge-Agenten.",
        "digest_intro": "Hinweise seit der letzten Übersicht:",
        "jobs_waiting": "{n} Druckaufträge warten",
        "jobs_waiting_one": "1 Druckauftrag wartet",
        "failover": " Solange er nicht druckt, gehen die Bons der {stations} nach {after_s} s an den Drucker {backup},"
        " überschrieben „UMGELEITET von {subject}“: dort abholen.",
        "station_one": "Station {names}",
        "stations": "Stationen {names}",
        "resolved_headline": "Behoben: {title}",
        "item_keys": {
            "id": "Druckauftrag",
            "order_id": "Bestell-ID",
            "order": "Bestellung",
            "attempts": "Versuche",
            "error": "Fehler",
            "age_min": "Wartezeit",
            "reason": "Grund",
            "text": "nicht druckbar",
            "ticket": "Bon",
            "ending": "Ausgang",
        },
        # How a ticket named in an all-clear ended (its last state, from COPY to COPY)
        "endings": {
            "printed": "gedruckt",
            "discarded": "verworfen, nicht gedruckt",
            "dead": "aufgegeben",
            # released (or routed again) by a person, on paper once its printer takes it
            "queued": "wartet auf den Drucker",
            "failed": "wartet auf den Drucker",
            "printing": "wird gedruckt",
        },
        # A held or dead job that is no whole ticket, as its paper is headed (edge/printing/labels.py)
        "variants": {"cancel": "STORNO", "change": "ÄNDERUNG", "added": "ÄNDERUNG"},
        # A guest's note it cannot print (its "note" flag): in the text, and in the order's line
        "note": "eine Notiz",
        "note_item": "Notiz",
    },
    "en": {
        "firing": "ALERT",
        "reminder": "REMINDER",
        "resolved": "RESOLVED",
        "critical": "(critical)",
        "test": "TEST",
        "digest": "DAILY DIGEST",
        "what": "What happened",
        "since": "Since",
        "until": "Until",
        "untold": "No alarm went out about this before: it was over before anyone could be told.",
        "affected": "Affected",
        "detail": "Last error",
        "detail_technical": "Technical message",
        "todo": "What to do",
        "extra": "{n} more times since the last mail.",
        "extra_one": "Once more since the last mail.",
        "minutes": "{n} minutes",
        "minutes_one": "1 minute",
        "status_page": "Status page",
        "footer": "{store} ({id}) – automatic message from the edge agent.",
        "digest_intro": "Notices since the last digest:",
        "jobs_waiting": "{n} print jobs waiting",
        "jobs_waiting_one": "1 print job waiting",
        "failover": " While it does not print, the tickets of {stations} go to printer {backup} after {after_s} s,"
        ' headed "REDIRECTED from {subject}": take them there from it.',
        "station_one": "station {names}",
        "stations": "stations {names}",
        "resolved_headline": "Resolved: {title}",
        "item_keys": {
            "id": "job",
            "order_id": "order id",
            "order": "order",
            "attempts": "attempts",
            "error": "error",
            "age_min": "waited",
            "reason": "reason",
            "text": "cannot print",
            "ticket": "ticket",
            "ending": "outcome",
        },
        "endings": {
            "printed": "printed",
            "discarded": "discarded, not printed",
            "dead": "given up",
            "queued": "waiting for the printer",
            "failed": "waiting for the printer",
            "printing": "printing",
        },
        "variants": {"cancel": "CANCELLED", "change": "CHANGED", "added": "CHANGED"},
        "note": "a note",
        "note_item": "note",
    },
}

# Alert types whose items are orders (their "id" is an order id); the others list print jobs.
_ORDER_ITEMS = frozenset(
    {
        "order_totals_mismatch",
        "recovery_conflict",
        "recovery_invalid",
        "order_conflict",
        "cancel_refused",
        "central_rejected_events",
        "mqtt_invalid",
        "text_unprintable",
    }
)

_PUSH_REFUSED = {
    "de": (
        "Bestellungen abgewiesen: Zugangsdaten des Absenders passen nicht",
        "Die Box weist Bestellungen ab, die ihr geschickt werden ({reason}, von {remote}): der Token oder die"
        " Signatur des Absenders passt nicht zu dieser Box. Solche Bestellungen kommen nicht an.",
        "Beim Absender (der Zentrale) denselben Token wie api.token der Box eintragen lassen (auf der Box:"
        " EDGE_API_TOKEN in /etc/edge/edge.env) bzw. dasselbe Signatur-Geheimnis; bei stale_signature die Uhr"
        " prüfen. Die nächste angenommene Bestellung beendet diese Meldung.",
    ),
    "en": (
        "Orders refused: the sender's credentials do not match",
        "The box refuses orders sent to it ({reason}, from {remote}): the sender's token or signature does not"
        " match this box. Such orders do not arrive.",
        "Have the sender (the central backend) set the same token as the box's api.token (on the box:"
        " EDGE_API_TOKEN in /etc/edge/edge.env) or the same signing secret; with stale_signature, check the"
        " clocks. The next order the box takes ends this alert.",
    ),
}

# Per alert type and language: title (subject), what happened, what to do. {subject} is the group's subject;
# other fields come from the alert's details.
TEXTS: dict[str, dict[str, tuple[str, str, str]]] = {
    "printer_offline": {
        "de": (
            "Drucker {subject} nicht erreichbar",
            "Der Drucker {subject} antwortet nicht; Bons für ihn werden nicht gedruckt.",
            "Am Drucker nachsehen: eingeschaltet, Papier eingelegt, Deckel geschlossen? (Mitten in einem langen Bon"
            " kann er nicht sagen, was fehlt.) Dann prüfen, ob das Netzwerkkabel steckt."
            " Wartende Bons drucken danach automatisch.",
        ),
        "en": (
            "Printer {subject} unreachable",
            "Printer {subject} does not answer; its tickets are not being printed.",
            "Look at the printer: is it switched on, with paper in and its cover closed? (In the middle of a long"
            " ticket it cannot say what is wrong.) Then check that its network cable is plugged in."
            " Waiting tickets print on their own afterwards.",
        ),
    },
    "printer_offline:(lookup)": {  # its name could not be looked up (edge/dns.py): the router, not the printer
        "de": (
            "Drucker {subject} nicht erreichbar",
            "Der Name des Druckers {subject}, {host}, lässt sich nicht nachschlagen (DNS); Bons für ihn werden nicht"
            " gedruckt. Der Drucker selbst ist vermutlich in Ordnung.",
            "Den Router prüfen (ist das Internet weg, antwortet oft auch sein DNS nicht mehr), oder in"
            " printers.{subject}.host statt des Namens die IP-Adresse des Druckers eintragen (edge.toml, dann den"
            " Dienst neu starten). Wartende Bons drucken danach automatisch.",
        ),
        "en": (
            "Printer {subject} unreachable",
            "The name of printer {subject}, {host}, could not be looked up (DNS); its tickets are not being printed."
            " The printer itself is probably fine.",
            "Check the router and its DNS (with the internet down it often stops answering too), or set the"
            " printer's IP address in printers.{subject}.host instead of its name (edge.toml, then restart the"
            " service). Waiting tickets print on their own afterwards.",
        ),
    },
    "printer_error": {
        "de": (
            "Drucker {subject}: Störung",
            "Der Drucker {subject} meldet eine Störung und druckt nicht (welche, sagt die technische Meldung unten).",
            "Am Drucker nachsehen: bei Papierstau im Schneidwerk das Papier herausziehen und den Deckel schließen"
            " (der Druck geht dann von selbst weiter); bei einem schweren Fehler aus- und wieder einschalten."
            " Wartende Bons drucken danach automatisch.",
        ),
        "en": (
            "Printer {subject}: fault",
            "Printer {subject} reports a fault and does not print (which one: see the technical message below).",
            "Look at the printer: for paper jammed in the cutter, pull it out and close the cover (printing goes on by"
            " itself); for an unrecoverable error, switch it off and on. Waiting tickets print on their own"
            " afterwards.",
        ),
    },
    # The fault it names (edge.printing.status.PrinterFault, DLE EOT 3), each with what a person does about it.
    "printer_error:(cutter)": {
        "de": (
            "Drucker {subject}: Papierstau im Schneidwerk",
            "Im Schneidwerk des Druckers {subject} klemmt Papier; er meldet einen Fehler des Abschneiders und druckt"
            " nicht.",
            "Papier aus dem Schneidwerk ziehen und den Deckel schließen; der Druck geht dann von selbst weiter."
            " Wartende Bons drucken danach automatisch.",
        ),
        "en": (
            "Printer {subject}: paper jammed in the cutter",
            "Paper is jammed in the cutter of printer {subject}; it reports an auto-cutter error and does not print.",
            "Pull the paper out of the cutter and close the cover; printing then goes on by itself. Waiting tickets"
            " print on their own afterwards.",
        ),
    },
    "printer_error:(recoverable)": {
        "de": (
            "Drucker {subject}: mechanische Störung",
            "Der Drucker {subject} meldet eine mechanische Störung und druckt nicht.",
            "Am Drucker nachsehen und freimachen, was ihn blockiert (Papier, Rolle, Deckel); der Druck geht dann von"
            " selbst weiter. Wartende Bons drucken danach automatisch.",
        ),
        "en": (
            "Printer {subject}: mechanical fault",
            "Printer {subject} reports a mechanical fault and does not print.",
            "Look at the printer and clear what blocks it (paper, roll, cover); printing then goes on by itself."
            " Waiting tickets print on their own afterwards.",
        ),
    },
    "printer_error:(unrecoverable)": {
        "de": (
            "Drucker {subject}: schwerer Fehler",
            "Der Drucker {subject} meldet einen schweren Fehler und druckt nicht.",
            "Den Drucker aus- und wieder einschalten; kommt der Fehler wieder, muss er zum Service. Wartende Bons"
            " drucken danach automatisch.",
        ),
        "en": (
            "Printer {subject}: unrecoverable error",
            "Printer {subject} reports an unrecoverable error and does not print.",
            "Switch the printer off and on; if the error comes back, it needs service. Waiting tickets print on their"
            " own afterwards.",
        ),
    },
    "printer_error:(auto_recoverable)": {
        "de": (
            "Drucker {subject}: Druckkopf zu heiß oder Deckel geöffnet",
            "Der Drucker {subject} hat angehalten: der Druckkopf ist zu heiß, oder der Deckel wurde beim Drucken"
            " geöffnet. Er druckt von selbst weiter, sobald das vorbei ist.",
            "Den Deckel geschlossen halten und den Drucker abkühlen lassen. Dauert es an, ihn aus- und wieder"
            " einschalten. Wartende Bons drucken danach automatisch.",
        ),
        "en": (
            "Printer {subject}: print head too hot or cover opened",
            "Printer {subject} has stopped: its print head is too hot, or the cover was opened while it printed. It"
            " goes on by itself once that is over.",
            "Keep the cover closed and let the printer cool down. If it lasts, switch it off and on. Waiting tickets"
            " print on their own afterwards.",
        ),
    },
    "printer_error:(unnamed)": {
        "de": (
            "Drucker {subject}: Störung",
            "Der Drucker {subject} meldet eine Störung und druckt nicht; welche, sagt er nicht.",
            "Am Drucker nachsehen (Papierstau, Deckel, Anzeige-Lämpchen) und freimachen, was ihn blockiert; hilft das"
            " nicht, aus- und wieder einschalten. Wartende Bons drucken danach automatisch.",
        ),
        "en": (
            "Printer {subject}: fault",
            "Printer {subject} reports a fault and does not print; it does not say which.",
            "Look at the printer (a paper jam, the cover, its lights) and clear what blocks it; if that does not"
            " help, switch it off and on. Waiting tickets print on their own afterwards.",
        ),
    },
    "printer_error:(dropped)": {  # it answers status and hangs up mid-ticket (spooler: HUNG_UP_MID_TICKET)
        "de": (
            "Drucker {subject}: Verbindung bricht ab",
            "Der Drucker {subject} antwortet, bricht aber Bons mittendrin ab: die Verbindung reißt beim Drucken"
            " (technische Meldung unten). Meist ein Wackelkontakt am Netzwerkkabel oder an der Stromversorgung.",
            "Das Netzwerkkabel am Drucker und am Switch oder Router fest einstecken, das Netzteil prüfen. Angefangene"
            " Bons druckt er danach als KOPIE nach, auch einen, den er aufgegeben hat, sobald er wieder einen ganzen"
            " Bon druckt.",
        ),
        "en": (
            "Printer {subject}: connection drops",
            "Printer {subject} answers but hangs up in the middle of tickets: the connection breaks while it prints"
            " (see the technical message below). Usually a loose network cable or power supply.",
            "Push the network cable in firmly at the printer and at the switch or router, and check its power supply."
            " Tickets it started print again afterwards marked COPY, also one it gave up on, once it prints a whole"
            " ticket again.",
        ),
    },
    "printer_feed_held": {
        "de": (
            "Drucker {subject}: FEED-Taste gedrückt",
            "Der Drucker {subject} schiebt seit mehr als {held_s} Sekunden Papier mit der FEED-Taste vor und druckt so"
            " lange keine Bons. Er antwortet; erreichbar ist er.",
            "Am Drucker nachsehen: klemmt die FEED-Taste, oder drückt etwas darauf (die Rolle, ein Karton)? Die Taste"
            " freimachen. Wartende Bons drucken danach automatisch.",
        ),
        "en": (
            "Printer {subject}: FEED button held",
            "Printer {subject} has been feeding paper with its FEED button for more than {held_s} seconds and prints"
            " no tickets meanwhile. It answers; it can be reached.",
            "Look at the printer: is the FEED button stuck, or is something pressing it (the roll, a box)? Free the"
            " button. Waiting tickets print on their own afterwards.",
        ),
    },
    "printer_paper_out": {
        "de": (
            "Drucker {subject}: Papier leer",
            "Im Drucker {subject} ist kein Papier mehr; der Druck ist angehalten.",
            "Neue Papierrolle einlegen. Wartende Bons drucken danach automatisch.",
        ),
        "en": (
            "Printer {subject}: out of paper",
            "Printer {subject} has run out of paper; printing has stopped.",
            "Put in a new paper roll. Waiting tickets print on their own afterwards.",
        ),
    },
    "printer_cover_open": {
        "de": (
            "Drucker {subject}: Deckel offen",
            "Der Deckel des Druckers {subject} ist offen; der Druck ist angehalten.",
            "Deckel schließen, bis er einrastet.",
        ),
        "en": (
            "Printer {subject}: cover open",
            "The cover of printer {subject} is open; printing has stopped.",
            "Close the cover until it clicks.",
        ),
    },
    "printer_paper_low": {
        "de": (
            "Drucker {subject}: Papier fast leer",
            "Die Papierrolle im Drucker {subject} geht zu Ende.",
            "Eine neue Rolle bereitlegen und bald wechseln.",
        ),
        "en": (
            "Printer {subject}: paper low",
            "The paper roll in printer {subject} is nearly used up.",
            "Have a new roll ready and change it soon.",
        ),
    },
    "print_job_failed": {
        "de": (
            "Bestellung {order}: Bon nicht gedruckt (Drucker {subject})",
            "Der Bon für Bestellung {order} konnte auf Drucker {subject} nach mehreren Versuchen nicht gedruckt"
            " werden.",
            "Drucker prüfen, dann den Bon neu drucken: edge retry AUFTRAG (oder über die Statusseite).",
        ),
        "en": (
            "Order {order}: ticket not printed (printer {subject})",
            "The ticket for order {order} could not be printed on printer {subject} after several attempts.",
            "Check the printer, then print the ticket again: edge retry JOB (or from the status page).",
        ),
    },
    "print_job_held": {
        "de": (
            "Bestellung {order}: Bon zurückgehalten (Drucker {subject})",
            "Ein Bon für Drucker {subject} hat zu lange gewartet und wurde zurückgehalten, statt mitten in den Betrieb"
            " zu drucken.",
            "Entscheiden Sie, ob der Bon noch gebraucht wird: freigeben (edge release AUFTRAG) oder verwerfen"
            " (edge discard AUFTRAG).",
        ),
        "en": (
            "Order {order}: ticket held (printer {subject})",
            "A ticket for printer {subject} waited too long and was held instead of printing into the rush.",
            "Decide whether it is still needed: release it (edge release JOB) or discard it (edge discard JOB).",
        ),
    },
    "print_job_unrouted": {
        "de": (
            "Bestellung {order}: Bon ohne Drucker (Drucker {subject} nicht mehr eingerichtet)",
            "Der Drucker {subject} steht nicht mehr in der Konfiguration, und kein anderer Drucker bedient seine"
            " Station. Der Bon wartet, bis wieder ein Drucker dafür eingerichtet ist.",
            "Den Drucker wieder eintragen oder die Station einem anderen Drucker zuordnen ([stations] in edge.toml,"
            " dann den Dienst neu starten): der Bon druckt dann von selbst. Oder ihn verwerfen (edge discard AUFTRAG).",
        ),
        "en": (
            "Order {order}: ticket without a printer (printer {subject} no longer set up)",
            "Printer {subject} is no longer in the configuration and no other printer serves its station. The ticket"
            " waits until a printer is set up for it.",
            "Add the printer back or give the station another printer ([stations] in edge.toml, then restart the"
            " service): the ticket then prints by itself. Or discard it (edge discard JOB).",
        ),
    },
    "station_unrouted": {
        "de": (
            "Bestellung {order}: Bon ohne Drucker (Station {subject} nicht eingerichtet)",
            "Die Bestellung hat Artikel für die Station {subject}, für die kein Drucker eingerichtet ist. Ihr Bon"
            " wartet; die übrigen Bons der Bestellung drucken.",
            "Die Station einem Drucker zuordnen ([stations] in edge.toml, Belege: [receipts], dann den Dienst neu"
            " starten): der Bon druckt dann von selbst. Oder ihn verwerfen (edge discard AUFTRAG).",
        ),
        "en": (
            "Order {order}: ticket without a printer (station {subject} not set up)",
            "The order has items for station {subject}, which no printer is set up for. Its ticket waits; the order's"
            " other tickets print.",
            "Give the station a printer ([stations] in edge.toml, receipts: [receipts], then restart the service):"
            " the ticket then prints by itself. Or discard it (edge discard JOB).",
        ),
    },
    "queue_backlog": {
        "de": (
            "Druckaufträge stauen sich",
            "Wartende Druckaufträge: {waiting}, der älteste seit {oldest_min}.",  # "Es warten 1 Druckaufträge" was
            "Prüfen Sie die Drucker auf der Statusseite; ein Drucker ist vermutlich gestört.",
        ),
        "en": (
            "Print jobs are piling up",
            "Print jobs waiting: {waiting}, the oldest for {oldest_min}.",
            "Check the printers on the status page; one of them is probably in trouble.",
        ),
    },
    "central_unreachable": {
        "de": (
            "Zentrale nicht erreichbar",
            "Die Verbindung zur Zentrale ist seit über {minutes} unterbrochen. Bestellungen, die hier"
            " ankommen, werden weiter gedruckt.",
            "Internetverbindung und Router prüfen. Verpasste Bestellungen holt der Agent automatisch nach.",
        ),
        "en": (
            "Central backend unreachable",
            "The line to the central backend has been down for more than {minutes}. Orders that reach this"
            " store still print.",
            "Check the internet connection and router. The agent fetches missed orders on its own afterwards.",
        ),
    },
    # Central answers, with errors only (its maintenance's 503, a 5xx): the store's line and router are fine
    "central_unreachable:(answers)": {
        "de": (
            "Zentrale antwortet mit Fehlern",
            "Die Zentrale antwortet seit über {minutes} nur mit Fehlern (z. B. wegen Wartung). Die"
            " Internetverbindung dieser Filiale ist in Ordnung. Bestellungen, die hier ankommen, werden weiter"
            " gedruckt.",
            "Hier ist nichts zu tun; dauert es an, das Team der Zentrale informieren. Verpasste Bestellungen holt der"
            " Agent automatisch nach.",
        ),
        "en": (
            "Central backend answers with errors",
            "The central backend has answered only with errors for more than {minutes} (maintenance, for"
            " example). This store's internet connection works. Orders that reach this store still print.",
            "Nothing to do here; if it goes on, tell central's team. The agent fetches missed orders on its own"
            " afterwards.",
        ),
    },
    # Central's host reached, its service not answering (connections reset, refused or left unanswered): the store's
    # line and router are fine
    "central_unreachable:(reached)": {
        "de": (
            "Zentrale antwortet nicht",
            "Der Rechner der Zentrale ist erreichbar, ihr Dienst antwortet aber seit über {minutes} nicht"
            " (Verbindungen abgewiesen oder ohne Antwort). Die Internetverbindung dieser Filiale ist in Ordnung."
            " Bestellungen, die hier ankommen, werden weiter gedruckt.",
            "Hier ist nichts zu tun; dauert es an, das Team der Zentrale informieren. Verpasste Bestellungen holt der"
            " Agent automatisch nach.",
        ),
        "en": (
            "Central backend does not answer",
            "The central backend's host is reachable, but its service has not answered for more than {minutes}"
            " (connections turned away or left unanswered). This store's internet connection works. Orders"
            " that reach this store still print.",
            "Nothing to do here; if it goes on, tell central's team. The agent fetches missed orders on its own"
            " afterwards.",
        ),
    },
    "scanner_offline": {
        "de": (
            "Scanner {subject} getrennt",
            "Der Scanner {subject} (Station {station}, Anschluss {port}) ist seit über {minutes} nicht"
            " verbunden. Er piept beim Scannen trotzdem, aber seine Scans kommen nicht an: Bons werden nicht als"
            " erledigt, Bestellungen nicht als fertig gemeldet.",
            "Kabel des Scanners prüfen: am Scanner und an der Box fest einstecken (USB: notfalls einen anderen"
            " USB-Anschluss der Box). Der Agent verbindet sich danach von selbst. Was in der Zeit gescannt wurde,"
            " danach noch einmal scannen.",
        ),
        "en": (
            "Scanner {subject} disconnected",
            "Scanner {subject} (station {station}, port {port}) has not been connected for more than {minutes}"
            ". It still beeps when it reads, but its scans do not arrive: tickets are not marked done, orders"
            " not marked ready.",
            "Check the scanner's cable: plugged in firmly at the scanner and at the box (USB: if need be, another USB"
            " port of the box). The agent reconnects on its own. Scan again what was scanned meanwhile.",
        ),
    },
    "central_refused_events": {
        "de": (
            "Bestellung {order}: Zentrale nimmt die Statusmeldungen nicht an",
            "Die Zentrale lehnt die Statusmeldungen zur Bestellung {order} (ID {subject}) ab, HTTP {status}."
            " {waiting} Meldungen warten hier und werden alle {retry_min} Minuten erneut angeboten; die Meldungen"
            " der anderen Bestellungen gehen weiter, gedruckt wird wie immer.",
            "Der Zentrale (dem Backend-Team) die Bestellung und ihre Antwort melden. Nimmt sie die Bestellung wieder"
            " an, gehen die Meldungen von selbst nach.",
        ),
        "en": (
            "Order {order}: central backend refuses its status events",
            "The central backend refuses the status events of order {order} (id {subject}), HTTP {status}. {waiting}"
            " events wait here and are offered again every {retry_min} minutes; the other orders' events go on,"
            " printing is not affected.",
            "Tell the central backend's team about the order and its answer. Once it takes the order again, the"
            " events follow on their own.",
        ),
    },
    "central_rejected_events": {
        "de": (
            "Bestellung {order}: Zentrale lehnt Statusmeldungen endgültig ab",
            "Die Zentrale hat Statusmeldungen zur Bestellung {order} endgültig abgelehnt ({detail}). Sie werden nicht"
            " erneut gesendet: die Zentrale kennt diesen Stand der Bestellung nicht. Gedruckt wird wie immer.",
            "Der Zentrale (dem Backend-Team) die Bestellungen und ihre Antwort melden. Ist es dort behoben, kann der"
            " Techniker die Meldungen erneut senden lassen.",
        ),
        "en": (
            "Order {order}: central backend refuses status events for good",
            "The central backend refused status events of order {order} for good ({detail}). They are not sent"
            " again: central does not know this state of the order. Printing is not affected.",
            "Tell the central backend's team about the orders and its answer. Once it is fixed there, the technician"
            " can have the events sent again.",
        ),
    },
    # The key central refuses as reused it took before with another body: another box sends as this one.
    "central_rejected_events:(reused)": {
        "de": (
            "Bestellung {order}: Zentrale lehnt Statusmeldungen endgültig ab",
            "Die Zentrale hat Statusmeldungen zur Bestellung {order} endgültig abgelehnt ({detail}): sie hat unter"
            " demselben Schlüssel schon eine andere Meldung erhalten. Höchstwahrscheinlich sendet ein anderes Gerät"
            " als dieses: die Speicherkarte dieser Box wurde geklont (oder eine alte Box läuft wieder). Gedruckt wird"
            " wie immer.",
            "Den Techniker rufen. Ersetzt diese Box eine andere, die alte ausgeschaltet lassen (nie beide zugleich"
            " betreiben). Ist die andere Box in einer anderen Filiale, bekommt sie ihre eigene agent.store_id und ein"
            " leeres data_dir (ihre Datenbank gehört dieser Filiale).",
        ),
        "en": (
            "Order {order}: central backend refuses status events for good",
            "The central backend refused status events of order {order} for good ({detail}): it took another event"
            " under the same key before. Most likely another box sends as this one: this box's SD card was cloned"
            " (or an old box runs again). Printing is not affected.",
            "Call the technician. If this box replaces another, keep the old one off (never run both). If the other"
            " box is in another store, it gets its own agent.store_id and an empty data_dir (its database is this"
            " store's).",
        ),
    },
    "database_moved": {
        "de": (
            "Speicherkarte lief in einem anderen Gerät",
            "Die Speicherkarte dieser Box lief bis {ran_until} (ihre letzte Bestellung) in einer anderen Box: eine"
            " geklonte oder umgesteckte Karte. Bestellungen von vor dem Start, die der Abgleich mit der Zentrale"
            " bringt, druckt sie als KOPIE: die andere Box kann sie gedruckt haben.",
            "Ersetzt diese Box die andere, ist nichts weiter zu tun: die alte ausgeschaltet lassen (nie beide"
            " zugleich betreiben). Steht diese Box in einer anderen Filiale: Agent stoppen, ihr eine eigene"
            " agent.store_id und ein leeres data_dir geben (die Datenbank gehört der anderen Filiale), dann starten.",
        ),
        "en": (
            "Memory card ran in another box",
            "This box's SD card ran in another box until {ran_until} (its last order there): a cloned or moved"
            " card. Orders from before this start that recovery brings from central print marked COPY: the other box"
            " may have printed them.",
            "If this box replaces the other one, nothing more to do: keep the old one off (never run both). If this"
            " box is in another store: stop the agent, give it its own agent.store_id and an empty data_dir (the"
            " database is the other store's), then start it.",
        ),
    },
    "recovery_failed": {
        "de": (
            "Nachholen verpasster Bestellungen fehlgeschlagen",
            "Der Abgleich mit der Zentrale ist in Phase {phase} gescheitert.",
            "Den Techniker informieren; mit 'edge recovery' kann der Abgleich erneut gestartet werden.",
        ),
        "en": (
            "Recovering missed orders failed",
            "Reconciling with the central backend failed in phase {phase}.",
            "Tell the technician; 'edge recovery' starts the reconciliation again.",
        ),
    },
    "backup_stale": {
        "de": (
            "Datensicherung gelingt nicht",  # its all-clear: "BEHOBEN: Datensicherung gelingt nicht"
            "Seit {age} ist keine Sicherung der Datenbank nach {dir} gelungen; die nächtliche Sicherung"
            " (edge-backup.timer) schlägt fehl oder läuft nicht. Fällt die Speicherkarte aus, fehlt die Kopie.",
            "Als Techniker `sudo -u edge /opt/edge-agent/current/bin/edge backup --config /etc/edge/edge.toml`"
            " ausführen: es sagt in einer Zeile, woran es liegt (USB-Stick voll, schreibgeschützt, fehlende Rechte);"
            " `systemctl status edge-backup.timer edge-backup.service` zeigt, ob und wie sie zuletzt lief.",
        ),
        "en": (
            "Backups failing",
            "No backup of the database has been written to {dir} for {age}; the nightly backup"
            " (edge-backup.timer) fails or does not run. Should the memory card fail, there is no copy to restore.",
            "As the technician, run `sudo -u edge /opt/edge-agent/current/bin/edge backup --config"
            " /etc/edge/edge.toml`: it says in one line what is wrong (a stick full, read-only, or not the agent's"
            " to write); `systemctl status edge-backup.timer edge-backup.service` shows whether and how it last ran.",
        ),
    },
    "storage_problem": {
        "de": (
            "Speicherproblem: {subject}",
            "Der Agent kann Bestellungen nicht sicher speichern ({subject}); neue Bestellungen werden abgelehnt oder"
            " warten, bis es behoben ist.",
            "Sofort den Techniker rufen: Speicherplatz freigeben oder Speicherkarte prüfen. Meldet er 'read-only'"
            " (schreibgeschützt), versagt die Karte: Gerät neu starten (reboot), das prüft und repariert sie; passiert"
            " es wieder, die Karte ersetzen (replace). Meldet er, dass die Karte nicht fertig schreibt, nutzt sie sich"
            " ab: bald ersetzen. Meldet er, dass ein anderes Programm die Datenbank zum Schreiben offen hält, ist die"
            " Karte in Ordnung: Wer am Gerät arbeitet (ein sqlite3 des Technikers), beendet es; danach werden"
            " Bestellungen sofort wieder angenommen.",
        ),
        "en": (
            "Storage problem: {subject}",
            "The agent cannot store orders safely ({subject}); new orders are refused, or wait, until this is fixed.",
            "Call the technician now: free disk space or check the storage card. If it says read-only, the card is"
            " failing: reboot the box, which checks and repairs it; replace the card if it happens again. If it says"
            " the card has not finished a write, the card is wearing out: replace it soon. If it says another program"
            " holds the database open for writing, the card is fine: whoever works on the box (a technician's"
            " sqlite3) quits that program, and orders are taken again at once.",
        ),
    },
    # The card below alerts.disk_free_min_mb (the group's subject "disk"): it still writes, so orders are still taken.
    "storage_problem:disk": {
        "de": (
            "Speicherkarte fast voll",
            "Auf der Speicherkarte des Agenten ist nur noch wenig Platz: Es sind noch {free_mb} MB frei, es sollen"
            " mindestens {min_mb} MB frei bleiben (alerts.disk_free_min_mb). Bestellungen werden noch angenommen und"
            " gedruckt; ist sie voll, werden neue abgelehnt, bis wieder Platz ist.",
            "Den Techniker rufen, bevor sie voll ist: Platz freigeben (alte Sicherungen, Protokolle) oder eine"
            " größere Karte einsetzen.",
        ),
        "en": (
            "Storage card nearly full",
            "The agent's storage card has little room left: {free_mb} MB free, where at least {min_mb} MB should stay"
            " free (alerts.disk_free_min_mb). Orders are still taken and printed; once it is full, new ones are"
            " refused until there is room again.",
            "Call the technician before it is full: free space (old backups, logs) or fit a larger card.",
        ),
    },
    "recovery_conflict": {
        "de": (
            "Bestellung {order}: Zentrale meldet anderen Inhalt",
            "Beim Abgleich hat die Zentrale Bestellungen mit anderem Inhalt geliefert, als hier schon gedruckt wurde."
            " Es gilt die hier gedruckte Fassung; die der Zentrale wurde nicht gedruckt.",
            "Prüfen, ob die Küche die richtige Fassung hat; die Unterschiede zeigt der Abgleich-Lauf"
            " (Statusseite oder edge recovery status). Bei Bedarf die Bestellung mit der Zentrale klären.",
        ),
        "en": (
            "Order {order}: central backend sent other content",
            "During reconciliation the central backend sent orders whose content differs from what was already"
            " printed here. The local version stands; the backend's was not printed.",
            "Check the kitchen has the right version; the recovery run lists the differences (status page or"
            " edge recovery status). Clear it up with the central backend if needed.",
        ),
    },
    "recovery_invalid": {
        "de": (
            "Bestellung {order}: von der Zentrale, aber ungültig, nicht gedruckt",
            "Beim Abgleich hat die Zentrale Bestellungen geliefert, die die Prüfung nicht bestehen;"
            " sie wurden weder gespeichert noch gedruckt.",
            "Die Bestellung bei der Zentrale korrigieren lassen und, falls noch nötig, von Hand bearbeiten;"
            " den Grund zeigt der Abgleich-Lauf (Statusseite oder edge recovery status).",
        ),
        "en": (
            "Order {order}: from the central backend but invalid, not printed",
            "During reconciliation the central backend sent orders that fail validation; they were neither"
            " stored nor printed.",
            "Have the order corrected at the central backend and, if still needed, handle it by hand; the recovery"
            " run shows the reason (status page or edge recovery status).",
        ),
    },
    "order_conflict": {
        "de": (
            "Bestellung {order}: Revision schon vergeben, anderer Inhalt",
            "Die Zentrale hat Bestellungen mit einer Revision gesendet, die hier schon mit anderem Inhalt gespeichert"
            " ist: dieselbe oder eine frühere (Spalte Fehler: das abweichende Feld, gesendete und hier geltende"
            " Revision). Es gilt die hier gespeicherte Fassung der geltenden Revision; die gesendete wurde abgelehnt"
            " (409) und nicht gedruckt.",
            "Die Zentrale bitten, Änderungen mit der nächsten Revision über der geltenden zu senden; prüfen, ob die"
            " Küche die richtige Fassung hat.",
        ),
        "en": (
            "Order {order}: revision already used, other content",
            "The central backend sent orders with a revision already stored here with other content: the same or an"
            " earlier one (column error: the field that differs, the revision sent and the one that stands here). The"
            " version stored here at the revision that stands is kept; the one sent was refused (409) and not"
            " printed.",
            "Ask the central backend to send changes with the next revision above the one that stands; check the"
            " kitchen has the right version.",
        ),
    },
    "mqtt_session_lost": {
        "de": (
            "MQTT: Broker hatte keine Sitzung für diese Filiale",
            "Der MQTT-Broker hatte keine Sitzung mehr für diese Filiale (neu gestartet ohne Speicher, abgelaufen oder"
            " ein anderer Broker). Bestellungen, die die Zentrale in der Zwischenzeit gesendet hat, wurden nicht für"
            " die Filiale aufbewahrt und nicht gedruckt; ohne Verbindung zur Zentrale ([central]) kann der Agent sie"
            " nicht nachholen.",
            "Die Zentrale bitten, die Bestellungen seit dem letzten gedruckten Bon erneut zu senden; den Techniker"
            " bitten, [central] einzurichten (dann holt der Agent solche Bestellungen selbst nach) oder die"
            " Persistenz des Brokers einzuschalten.",
        ),
        "en": (
            "MQTT: the broker had no session for this store",
            "The MQTT broker no longer had a session for this store (restarted without persistence, expired, or"
            " another broker). Orders central sent meanwhile were not kept for the store and did not print; without a"
            " link to central ([central]) the agent cannot fetch them.",
            "Ask central to send the orders since the last printed ticket again; ask the technician to set up"
            " [central] (the agent then fetches such orders itself) or turn on the broker's persistence.",
        ),
    },
    "text_unprintable": {
        "de": (
            "Drucker {subject}: Text nicht druckbar",
            "Der Drucker {subject} kann Zeichen in Artikelnamen oder Notizen nicht darstellen (Bestellung {order}:"
            " {detail}). Sie werden als ? gedruckt; neben einem Artikel, von dessen Namen nichts bleibt, steht seine"
            " Artikelnummer (SKU).",
            "Die Namen im Kassensystem bzw. in der Zentrale mit lateinischen Buchstaben eintragen oder einen Drucker"
            " einrichten, der diese Schrift kann. Bis dahin: Notizen dieser Bestellungen an der Kasse nachlesen.",
        ),
        "en": (
            "Printer {subject}: text it cannot print",
            "Printer {subject} cannot show characters in item names or notes (order {order}: {detail}). They print"
            " as ?; an item with nothing left of its name has its SKU beside it.",
            "Enter the names at the till or central in Latin letters, or set up a printer that prints this script."
            " Until then, read the notes of these orders at the till.",
        ),
    },
    "cancel_refused": {
        "de": (
            "Bestellung {order}: Storno nicht übernommen",
            "Eine Stornierung kam mit einer Revision, die nicht über der gespeicherten liegt (Spalte Fehler: gesendet ≤"
            " gespeichert). Sie wurde abgelehnt (409); die Bestellung ist nicht storniert und wird zubereitet.",
            "Ist der Gast gegangen, der Küche Bescheid geben; die Kasse bzw. Zentrale bitten, die Stornierung mit der"
            " nächsten Revision erneut zu senden.",
        ),
        "en": (
            "Order {order}: cancel not applied",
            "A cancel came with a revision not above the stored one (column error: sent ≤ stored). It was refused"
            " (409); the order is not cancelled and is being made.",
            "If the guest has left, tell the kitchen; ask the till or central to send the cancel again with the next"
            " revision.",
        ),
    },
    "mqtt_refused": {
        "de": (
            "MQTT-Broker lehnt die Anmeldung ab",
            "Der MQTT-Broker nimmt die Verbindung dieser Filiale nicht an ({detail}). Bestellungen über MQTT kommen"
            " nicht an; Bestellungen über HTTP und der Abgleich mit der Zentrale laufen weiter.",
            "Benutzername, Passwort (EDGE_MQTT_PASSWORD) oder Zertifikate in der Konfiguration prüfen lassen;"
            " den Grund zeigt edge doctor.",
        ),
        "en": (
            "MQTT broker refuses the login",
            "The MQTT broker does not accept this store's connection ({detail}). Orders over MQTT do not arrive;"
            " orders over HTTP and reconciliation with the central backend go on.",
            "Have the user name, password (EDGE_MQTT_PASSWORD) or certificates in the config checked; edge doctor"
            " shows the reason.",
        ),
    },
    "mqtt_unreachable": {
        "de": (
            "MQTT-Broker nicht erreichbar",
            "Die Verbindung zum MQTT-Broker {broker} ist seit über {minutes} unterbrochen ({detail})."
            " Bestellungen über MQTT kommen so lange nicht an; Bestellungen über HTTP werden weiter gedruckt.",
            "Internetverbindung und Router prüfen, und ob der Broker läuft (edge doctor zeigt den Grund). Was der"
            " Broker für diese Filiale aufbewahrt, kommt nach, sobald die Verbindung steht.",
        ),
        "en": (
            "MQTT broker unreachable",
            "The connection to the MQTT broker {broker} has been down for more than {minutes} ({detail})."
            " Orders over MQTT do not arrive meanwhile; orders over HTTP still print.",
            "Check the internet connection and router, and whether the broker runs (edge doctor shows the reason)."
            " What the broker keeps for this store arrives once the connection is back.",
        ),
    },
    "mqtt_events_refused": {
        "de": (
            "MQTT-Broker nimmt die Statusmeldungen nicht an",
            "Der MQTT-Broker weist die Statusmeldungen dieser Filiale ab ({detail}). Die Zentrale erfährt nicht, was"
            " gedruckt ist; Bestellungen kommen an und drucken, die Meldungen warten und gehen nach.",
            "Die Zugriffsregeln (ACL) des Brokers prüfen lassen: die Filiale muss auf ihre Themen events und status"
            " schreiben dürfen.",
        ),
        "en": (
            "MQTT broker does not take the status events",
            "The MQTT broker refuses this store's status events ({detail}). The central backend does not learn what"
            " printed; orders arrive and print, the events wait and follow.",
            "Have the broker's access rules (ACL) checked: the store must be allowed to write its events and status"
            " topics.",
        ),
    },
    "mqtt_not_delivering": {
        "de": (
            "Bestellungen über MQTT kommen nicht an",
            "Die Filiale ist mit dem MQTT-Broker verbunden, aber Bestellungen der Zentrale kommen nur über den Abgleich"
            " an, bis zum Abgleichsintervall verspätet ({detail}).",
            "Die Zugriffsregeln (ACL) des Brokers prüfen lassen: die Filiale muss ihr Thema orders lesen dürfen (ein"
            " Tippfehler in der Zeile genügt); die Zentrale muss dorthin senden. Mit der nächsten Bestellung über MQTT"
            " ist die Meldung behoben.",
        ),
        "en": (
            "Orders do not arrive over MQTT",
            "The store is connected to the MQTT broker, but the central backend's orders only come by reconciliation,"
            " up to its interval late ({detail}).",
            "Have the broker's access rules (ACL) checked: the store must be allowed to read its orders topic (one"
            " mistyped line does it); the backend must publish there. The next order over MQTT resolves this.",
        ),
    },
    # What brings the refused orders depends on the config (the alert's "cause", set where it is raised): the next
    # scheduled reconciliation, only the next start (schedule_interval_s = 0), or nothing (no [central]).
    "push_refused": {
        "de": (
            _PUSH_REFUSED["de"][0],
            _PUSH_REFUSED["de"][1] + " Der Abgleich mit der Zentrale holt sie bei seinem nächsten Lauf nach (bis zu"
            " {recovery_min} später, zu alte werden angehalten).",
            _PUSH_REFUSED["de"][2],
        ),
        "en": (
            _PUSH_REFUSED["en"][0],
            _PUSH_REFUSED["en"][1] + " Reconciliation with the central backend fetches them at its next run (up to"
            " {recovery_min} later; those too old are held).",
            _PUSH_REFUSED["en"][2],
        ),
    },
    "push_refused:(no_schedule)": {
        "de": (
            _PUSH_REFUSED["de"][0],
            _PUSH_REFUSED["de"][1] + " Der Abgleich mit der Zentrale läuft hier nicht nach Zeitplan"
            " (central.schedule_interval_s = 0): er holt sie nur beim nächsten Start des Agenten oder nach einem"
            " Ausfall der Leitung.",
            _PUSH_REFUSED["de"][2] + " Danach den Agenten neu starten (sudo systemctl restart edge-agent), damit der"
            " Abgleich die abgewiesenen Bestellungen holt.",
        ),
        "en": (
            _PUSH_REFUSED["en"][0],
            _PUSH_REFUSED["en"][1] + " Reconciliation with the central backend runs on no schedule here"
            " (central.schedule_interval_s = 0): it fetches them only at the agent's next start or after the line was"
            " down.",
            _PUSH_REFUSED["en"][2] + " Then restart the agent (sudo systemctl restart edge-agent) so that"
            " reconciliation fetches the refused orders.",
        ),
    },
    "push_refused:(no_central)": {
        "de": (
            _PUSH_REFUSED["de"][0],
            _PUSH_REFUSED["de"][1] + " Nichts holt sie nach: für diese Box ist kein Abgleich mit der Zentrale"
            " eingerichtet ([central]).",
            _PUSH_REFUSED["de"][2] + " Die abgewiesenen Bestellungen danach erneut senden lassen (oder von Hand"
            " bearbeiten).",
        ),
        "en": (
            _PUSH_REFUSED["en"][0],
            _PUSH_REFUSED["en"][1] + " Nothing fetches them later: this box has no reconciliation with a central"
            " backend ([central]).",
            _PUSH_REFUSED["en"][2] + " Then have the refused orders sent again (or handle them by hand).",
        ),
    },
    "mqtt_invalid": {
        "de": (
            "Bestellung {order}: über MQTT, aber ungültig, nicht gedruckt",
            "Über MQTT kamen Nachrichten, die keine gültige Bestellung sind; sie wurden aufbewahrt, aber nicht"
            " gedruckt.",
            "Die Bestellung bei der Zentrale korrigieren lassen und, falls noch nötig, von Hand bearbeiten;"
            " den Grund zeigen edge doctor und die Statusseite.",
        ),
        "en": (
            "Order {order}: over MQTT but invalid, not printed",
            "Messages arrived over MQTT that are not a valid order; they were kept, but not printed.",
            "Have the order corrected at the central backend and, if still needed, handle it by hand; edge doctor"
            " and the status page show the reason.",
        ),
    },
    "order_totals_mismatch": {
        "de": (
            "Bestellung {order}: Summen stimmen nicht",
            "Die Summen der Bestellung {order} passen nicht zusammen ({detail}). "
            "Bon und Beleg wurden wie gesendet gedruckt.",
            "Beleg prüfen und der Zentrale melden: die Kasse oder der Onlineshop berechnet falsch.",
        ),
        "en": (
            "Order {order}: totals do not add up",
            "The totals of order {order} do not add up ({detail}). Ticket and receipt were printed as sent.",
            "Check the receipt and tell the central office: the till or web shop computes it wrong.",
        ),
    },
}


# Why an order's totals do not add up (edge.orders.totals.TotalsCheck), per language; each amount as the receipt
# prints it. "_open": a 0 % tax line leaves the goods without an upper bound.
_TOTALS = {
    "de": {
        "items": "Artikel ergeben {items}, aber Zwischensumme {subtotal}",
        "total": "Zwischensumme {subtotal} - Rabatt {discount} = {net}, aber Summe {total}",
        "surcharge": "Rabatt {discount} ist negativ: ein Aufschlag von {surcharge} (als solcher gedruckt)",
        "tax_rate": "MwSt {rate} ist {stated}, der Anteil ihrer Artikel an der Summe ergibt {want}",
        "tax_implied": "die MwSt-Zeilen ergeben Waren von {low} bis {high} inkl. MwSt, aber Summe {total}",
        "tax_implied_open": "die MwSt-Zeilen ergeben Waren von mindestens {low} inkl. MwSt, aber Summe {total}",
    },
    "en": {
        "items": "items add up to {items}, subtotal is {subtotal}",
        "total": "subtotal {subtotal} - discount {discount} = {net}, total is {total}",
        "surcharge": "discount {discount} is negative: a surcharge of {surcharge} (printed as one)",
        "tax_rate": "VAT at {rate} is {stated}, its items' share of the total makes {want}",
        "tax_implied": "tax lines imply goods of {low} to {high} including VAT, total is {total}",
        "tax_implied_open": "tax lines imply goods of at least {low} including VAT, total is {total}",
    },
}

# Types whose "detail" is the device's or the agent's own words, in English: labelled as such, not as the mail's text
# (a German printer fault mail said which fault only under "Letzte Meldung", in English: the i18n82 probe, F2).
_TECHNICAL_DETAIL = frozenset(
    {
        "printer_offline",
        "printer_error",
        "printer_paper_out",
        "printer_cover_open",
        "printer_paper_low",
        "printer_feed_held",
        "print_job_failed",
        "scanner_offline",
    }
)

# Details that are a number of megabytes (storage_problem:disk)
_MEGABYTES = frozenset({"free_mb", "min_mb"})

# Details and item fields that are a wait in whole minutes: shown as a person reads one, "40 d" rather than "57600".
_WAITS_MIN = frozenset({"age_min", "oldest_min", "recovery_min"})


def wait_text(minutes: int) -> str:
    """A wait as the kitchen reads it: minutes under an hour, then hours and minutes, from a day on days and hours."""
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _shown(key: str, value: Any) -> Any:
    return wait_text(value) if key in _WAITS_MIN else value


def texts_of(type_name: str, subject: str, cause: str = "") -> dict[str, tuple[str, str, str]]:
    """A type's title, what and action, per language: the subject's own where it has them ("storage_problem:disk"),
    else the cause's (its details' "cause": "printer_offline:(lookup)"; no subject is written in brackets)."""
    return TEXTS.get(f"{type_name}:{subject}") or TEXTS.get(f"{type_name}:({cause})") or TEXTS[type_name]


class _Fields(dict[str, Any]):
    """Missing fields render as '?' instead of failing a mail that must go out."""

    def __missing__(self, key: str) -> str:
        return "?"


def _joined(names: str, more: str) -> str:
    return f"{names}, {more}" if names else more


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class AlertRenderer:
    def __init__(
        self,
        *,
        language: str,
        store_name: str,
        store_id: str,
        tz: ZoneInfo | None,
        status_page_url: str = "",
        template_dir: Path | None = None,
        central: RemoteClock | None = None,
    ) -> None:
        """``central``: central's clock as its answers tell it; the times shown are on it while the box's is off."""
        import jinja2  # here: an agent without [smtp] never renders a mail, and its start does not load jinja2

        loaders: list[jinja2.BaseLoader] = [jinja2.PackageLoader("edge.alerts", "templates")]
        if template_dir is not None:
            loaders.insert(0, jinja2.FileSystemLoader(template_dir))
        # Autoescape HTML: order notes, numbers and printer errors are untrusted text.
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(["html"]),
            keep_trailing_newline=True,
        )
        self.language = language
        self._labels = LABELS[language]
        self._tz = tz
        self._central = central
        self._common: dict[str, Any] = {
            "store": {"name": store_name, "id": store_id},
            "status_page_url": status_page_url,
            "language": language,
            "labels": self._labels,
        }

    def _time(self, at: float) -> str:
        # Stored times are the box's clock's. While central's answers show it off, they are shown on central's, as the
        # mail's Date is: a box booted years behind told an outage "since 2021" (the clock probe's F2).
        local = store_time(at, self._tz, self._central)
        shown = local.strftime("%d.%m.%Y %H:%M:%S" if self.language == "de" else "%Y-%m-%d %H:%M:%S")
        # In the hour the autumn change repeats, 02:51 is two times an hour apart: its offset says which one.
        if repeated_hour(local) and (offset := local.utcoffset()):
            minutes = int(offset.total_seconds()) // 60
            shown += f" (UTC{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d})"
        return shown

    def _render(self, template: str, **context: Any) -> str:
        return self._env.get_template(template).render(**self._common, **context)

    def alert_fields(self, group: dict[str, Any], kind: str, extra: int) -> dict[str, Any]:
        details = group["details"]
        items = details.get("items", [])
        fields = _Fields(
            {
                **{k: _shown(k, v) for k, v in details.items() if k not in ("items", "ended")},
                "subject": group["subject"],
            }
        )
        if details.get("note"):  # worded here, in the mail's language (the i18n82 probe, F1)
            fields["detail"] = _joined(fields.get("detail", ""), self._labels["note"])
        for key in _MEGABYTES & fields.keys():  # as the mail's reader writes numbers: 65.276 MB, 65,276 MB
            if isinstance(fields[key], int):
                fields[key] = f"{fields[key]:,}".replace(",", "." if self.language == "de" else ",")
        if "totals" in details:  # numbers, worded here with the receipt's amounts (the i18n82 probe, F3)
            fields["detail"] = self._totals(details["totals"])
        if "ran_until" in details:  # a time, shown as the mail's others are; None: unknown
            fields["ran_until"] = "?" if details["ran_until"] is None else self._time(details["ran_until"])
        if "down_min" in fields:  # "seit über 1 Minuten" was the central77 probe's C3
            n = fields["down_min"]
            fields["minutes"] = self._labels["minutes_one"] if n == "1" else self._labels["minutes"].format(n=n)
        if items:
            fields.setdefault(
                "order",
                items[-1].get("order", "?") if len(items) == 1 else f"{items[0].get('order', '?')} (+{len(items) - 1})",
            )
        title, what, action = (
            text.format_map(fields)
            for text in texts_of(group["type"], group["subject"], details.get("cause", ""))[self.language]
        )
        labels = self._labels
        if kind != "resolved":
            action += "".join(
                self._failover(group["subject"], details, backup, stations)
                for backup, stations in details.get("failover", ())
            )
        waiting = details.get("jobs_waiting")
        return {
            "type": group["type"],
            "subject": group["subject"],
            "severity": group["severity"],
            "kind": kind,
            "title": title,
            "headline": labels["resolved_headline"].format(title=title) if kind == "resolved" else title,
            "what": what,
            "action": action,
            "since": self._time(group["first_at"]),
            "until": self._time(group["changed_at"]) if kind == "resolved" and group.get("changed_at") else "",
            # An all-clear whose alarm nobody was told (its occurrences held in memory while the store refused writes):
            # the first word of it, said so, or it reads as an alarm lost (the storage83 probe, F9).
            "untold": kind == "resolved" and group.get("notified") == "resolved",
            # The all-clear comes once it is over: what waited then has printed or is printing.
            "affected": (labels["jobs_waiting_one"] if waiting == 1 else labels["jobs_waiting"].format(n=waiting))
            if waiting and kind != "resolved"
            else "",
            "detail": fields.get("detail", ""),
            "detail_label": labels["detail_technical" if group["type"] in _TECHNICAL_DETAIL else "detail"],
            "siblings": [
                self._item_line(group["type"], item, details.get("ended", {}) if kind == "resolved" else {})
                for item in items
            ],
            "extra": extra,
        }

    def _totals(self, problem: dict[str, Any]) -> str:
        """What does not add up (TotalsProblem.as_details) in the mail's language, amounts as on the receipt."""
        from edge.printing.labels import money, percent  # here: the setup wizard's test mail needs no orders

        amounts, currency = problem["amounts"], problem["currency"]
        check = problem["check"] + ("_open" if problem["check"] == "tax_implied" and "high" not in amounts else "")
        shown = {
            k: percent(Decimal(v), self.language) if k == "rate" else money(Decimal(v), currency, self.language)
            for k, v in amounts.items()
        }
        return _TOTALS[self.language][check].format_map(_Fields(shown))

    def _failover(self, printer: str, details: dict[str, Any], backup: str, stations: list[str]) -> str:
        """Where a station's tickets go while its primary ``printer`` is out (Alerter's _failovers)."""
        labels = self._labels
        named = labels["station_one" if len(stations) == 1 else "stations"].format(names=", ".join(stations))
        after = details.get("failover_after_s", "?")
        return str(labels["failover"]).format(stations=named, after_s=after, backup=backup, subject=printer)

    def _item_line(self, type_name: str, item: dict[str, Any], ended: dict[str, str]) -> str:
        """One affected job or order: its id named for what it is, an id that only repeats the order left out; in an
        all-clear, how the job ended (``ended``: job id → its last state) where that is known."""
        keys = self._labels["item_keys"]
        id_label = keys["order_id"] if type_name in _ORDER_ITEMS else keys["id"]
        shown = {k: v for k, v in item.items() if not (k == "id" and v == item.get("order"))}
        if "ticket" in shown:
            shown["ticket"] = self._labels["variants"].get(shown["ticket"], shown["ticket"])
        if "totals" in shown:
            shown["error"] = self._totals(shown.pop("totals"))
        if shown.pop("note", False):
            shown["text"] = _joined(shown.get("text", ""), self._labels["note_item"])
        if (ending := self._labels["endings"].get(ended.get(str(item.get("id")), ""))) is not None:
            shown["ending"] = ending
        return " · ".join(f"{id_label if k == 'id' else keys.get(k, k)}: {_shown(k, v)}" for k, v in shown.items())

    def alert(self, group: dict[str, Any], *, kind: str, extra: int, recipients: Sequence[str]) -> Mail:
        alert = self.alert_fields(group, kind, extra)
        return Mail(
            recipients=list(recipients),
            subject=_one_line(self._render("subject.txt", alert=alert)),
            text=self._render("body.txt", alert=alert),
            html=self._render("body.html", alert=alert),
        )

    def digest(self, entries: Sequence[dict[str, Any]], *, recipients: Sequence[str]) -> Mail:
        """One line per alert, at its first news: how often it fired where more than once, and when it ended if it
        did. A line per reminder and all-clear ("ERINNERUNG … (0×)" under its "STÖRUNG … (1×)") told the same news
        again and "0 times" of a condition still on (the week79 probe, F2)."""
        grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for e in entries:
            grouped.setdefault((e["type"], e["subject"]), []).append(e)
        labels, lines = self._labels, []
        for (type_name, subject), told in grouped.items():
            title = texts_of(type_name, subject)[self.language][0].format_map(_Fields(subject=subject))
            fired = [e for e in told if e["detail"] == "firing"]
            first = (fired or told)[0]
            times = sum(e["count"] for e in fired)
            line = f"{self._time(first['at'])} {labels[first['detail']]}: {title}" + (
                f" ({times}×)" if times > 1 else ""
            )
            if fired and told[-1]["detail"] == "resolved":
                line += f"; {labels['resolved']} {self._time(told[-1]['at'])}"
            lines.append(line)
        store = self._common["store"]
        return Mail(
            recipients=list(recipients),
            subject=_one_line(f"[{store['name']} ({store['id']})] {self._labels['digest']}: {len(lines)}"),
            text=self._render("digest.txt", entries=lines),
            html=self._render("digest.html", entries=lines),
        )

    def test(self, *, recipients: Sequence[str]) -> Mail:
        store = self._common["store"]
        text = (
            f"Testnachricht: Die E-Mail-Benachrichtigung der Filiale {store['name']} funktioniert."
            if self.language == "de"
            else f"Test message: e-mail alerts for store {store['name']} work."
        )
        return Mail(
            recipients=list(recipients),
            subject=_one_line(f"[{store['name']} ({store['id']})] {self._labels['test']}: {text.split(':')[0]}"),
            text=text + "\n",
            # From the environment, which escapes strings (select_autoescape's default_for_string).
            html=self._env.from_string("<!doctype html><html><body><p>{{ text }}</p></body></html>").render(text=text),
        )
