"""The generated company's world: latent-state dynamics, firmographic vocabularies, names and job titles.

Kept apart from :mod:`leadscore.generate` so the history generator reads as the process it plays
(states → activities → stages → opportunities) while the tables it draws from sit here.
"""

from __future__ import annotations

import numpy as np

SECONDS_PER_DAY = 86_400
STATES = ("cold", "aware", "engaged", "buying")
#: daily transition matrix of the latent interest state (rows: from, columns: to)
TRANSITIONS = np.array(
    [
        [0.985, 0.012, 0.003, 0.000],
        [0.040, 0.920, 0.038, 0.002],
        [0.020, 0.060, 0.880, 0.040],
        [0.010, 0.020, 0.120, 0.850],
    ]
)
INITIAL_STATE = np.array([0.10, 0.55, 0.28, 0.07])
#: relative daily activity rate per state (scaled to hit ``activities_per_lead``)
EMISSION_RATE = np.array([0.03, 0.35, 1.2, 3.0])
#: SQL hazard log-odds per state, relative to the calibrated intercept
STATE_LOGIT = np.array([-5.0, -3.5, -1.0, 2.0])
FIT_LOGIT = 1.5

#: activity mix per state (types not listed have probability 0)
TYPE_MIX: dict[str, dict[str, float]] = {
    "cold": {"email_open": 0.55, "page_view": 0.25, "email_bounce": 0.08, "unsubscribe": 0.07, "other": 0.05},
    "aware": {"page_view": 0.42, "email_open": 0.33, "email_click": 0.10, "content_download": 0.06,
              "unsubscribe": 0.01, "other": 0.08},
    "engaged": {"page_view": 0.33, "email_open": 0.18, "email_click": 0.14, "content_download": 0.10,
                "webinar_attended": 0.07, "form_submit": 0.06, "pricing_page_view": 0.08, "other": 0.04},
    "buying": {"pricing_page_view": 0.20, "page_view": 0.22, "demo_request": 0.08, "trial_signup": 0.06,
               "meeting_booked": 0.05, "form_submit": 0.08, "email_click": 0.12, "email_open": 0.10,
               "content_download": 0.04, "webinar_attended": 0.03, "other": 0.02},
}
PROPERTIES = {
    "page_view": '{"url": "/blog"}',
    "pricing_page_view": '{"url": "/pricing"}',
    "email_open": '{"campaign": "newsletter"}',
    "email_click": '{"campaign": "nurture"}',
    "form_submit": '{"form": "contact"}',
    "content_download": '{"asset": "whitepaper"}',
    "webinar_attended": '{"webinar": "product-tour"}',
    "demo_request": '{"form": "demo"}',
    "trial_signup": '{"plan": "trial"}',
    "meeting_booked": '{"calendar": "sales"}',
}

INDUSTRIES = {
    "software": (0.16, 0.6), "financial_services": (0.12, 0.5), "manufacturing": (0.14, 0.3),
    "healthcare": (0.10, 0.3), "retail": (0.12, 0.0), "education": (0.08, -0.4), "government": (0.05, -0.6),
    "media": (0.08, 0.0), "logistics": (0.09, 0.1), "nonprofit": (0.06, -0.7),
}
COUNTRIES = {
    "US": (0.30, "en"), "GB": (0.10, "en"), "DE": (0.12, "de"), "FR": (0.09, "fr"), "IT": (0.08, "it"),
    "ES": (0.07, "es"), "NL": (0.05, "en"), "CA": (0.05, "en"), "MX": (0.05, "es"), "BR": (0.04, "en"),
    "IN": (0.03, "en"), "AU": (0.02, "en"),
}
SOURCES = {
    "organic_search": (0.22, 0.1), "paid_search": (0.16, 0.0), "social": (0.10, -0.2), "referral": (0.08, 0.4),
    "event": (0.07, 0.3), "webinar": (0.07, 0.2), "content_syndication": (0.08, -0.3), "direct": (0.07, 0.1),
    "partner": (0.05, 0.4), "newsletter": (0.10, -0.4),
}
SENIORITY = {
    "c_level": (0.06, 0.9), "vp": (0.06, 0.8), "head": (0.10, 0.6), "director": (0.12, 0.6),
    "manager": (0.25, 0.2), "individual": (0.33, -0.3), "intern": (0.08, -1.2),
}
DEPARTMENTS = {
    "marketing": (0.20, 0.5), "sales": (0.15, 0.3), "it": (0.12, 0.4), "engineering": (0.12, 0.1),
    "procurement": (0.06, 0.2), "finance": (0.08, 0.0), "hr": (0.05, -0.5), "operations": (0.08, 0.0),
    "product": (0.07, 0.2), "executive": (0.07, 0.5),
}
FREE_MAIL = ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "gmx.de", "libero.it", "orange.fr"]
TLD = {"DE": "de", "FR": "fr", "IT": "it", "ES": "es", "NL": "nl", "GB": "co.uk", "MX": "mx", "BR": "com.br"}

DEPT_WORDS = {
    "en": {"marketing": "Marketing", "sales": "Sales", "it": "IT", "engineering": "Engineering",
           "procurement": "Purchasing", "finance": "Finance", "hr": "HR", "operations": "Operations",
           "product": "Product", "executive": "Strategy"},
    "de": {"marketing": "Marketing", "sales": "Vertrieb", "it": "IT", "engineering": "Engineering",
           "procurement": "Einkauf", "finance": "Finanzen", "hr": "Personal", "operations": "Logistik",
           "product": "Produkt", "executive": "Strategie"},
    "fr": {"marketing": "Marketing", "sales": "Commercial", "it": "Informatique", "engineering": "Ingénierie",
           "procurement": "Achats", "finance": "Finances", "hr": "Ressources Humaines", "operations": "Opérations",
           "product": "Produit", "executive": "Stratégie"},
    "it": {"marketing": "Marketing", "sales": "Vendite", "it": "Sistemi Informativi", "engineering": "Ingegneria",
           "procurement": "Acquisti", "finance": "Finanza", "hr": "Risorse Umane", "operations": "Logistica",
           "product": "Prodotto", "executive": "Strategia"},
    "es": {"marketing": "Marketing", "sales": "Ventas", "it": "Informática", "engineering": "Ingeniería",
           "procurement": "Compras", "finance": "Finanzas", "hr": "Recursos Humanos", "operations": "Operaciones",
           "product": "Producto", "executive": "Estrategia"},
}
TITLE_TEMPLATES = {
    "en": {"c_level": ["Chief {D} Officer", "CEO", "Founder & CEO", "Co-Founder"], "vp": ["VP {D}", "Vice President of {D}", "SVP {D}"],
           "head": ["Head of {D}", "Head of {D} EMEA"], "director": ["{D} Director", "Director of {D}"],
           "manager": ["{D} Manager", "Senior {D} Manager", "{D} Team Lead"],
           "individual": ["{D} Specialist", "{D} Analyst", "{D} Associate", "Senior {D} Specialist"],
           "intern": ["{D} Intern", "Working Student {D}"]},
    "de": {"c_level": ["Geschäftsführer", "Geschäftsführerin", "Inhaber"], "vp": ["Vice President {D}"],
           "head": ["Leiter {D}", "Leiterin {D}"], "director": ["Direktor {D}", "Direktorin {D}"],
           "manager": ["Teamleiter {D}", "Teamleiterin {D}", "{D} Manager"],
           "individual": ["Referent {D}", "Sachbearbeiterin {D}", "Spezialist {D}"],
           "intern": ["Praktikant {D}", "Werkstudentin {D}"]},
    "fr": {"c_level": ["PDG", "Directeur Général", "Directrice Générale"], "vp": ["Vice-Président {D}"],
           "head": ["Responsable {D}", "Responsable {D} France"], "director": ["Directeur {D}", "Directrice {D}"],
           "manager": ["Manager {D}", "Chef d'équipe {D}"], "individual": ["Chargé de {D}", "Chargée de {D}", "Analyste {D}"],
           "intern": ["Stagiaire {D}"]},
    "it": {"c_level": ["Amministratore Delegato", "Presidente", "Fondatore"], "vp": ["Vicepresidente {D}"],
           "head": ["Responsabile {D}", "Responsabile Ufficio {D}"], "director": ["Direttore {D}", "Direttrice {D}"],
           "manager": ["Coordinatore {D}", "Coordinatrice {D}", "{D} Manager"],
           "individual": ["Specialista {D}", "Addetto {D}", "Impiegata {D}"], "intern": ["Tirocinante {D}"]},
    "es": {"c_level": ["Director General", "Directora General", "Fundador"], "vp": ["Vicepresidente de {D}"],
           "head": ["Jefe de {D}", "Jefa de {D}"], "director": ["Director de {D}", "Directora de {D}"],
           "manager": ["Gerente de {D}", "Coordinadora de {D}"], "individual": ["Analista de {D}", "Especialista en {D}"],
           "intern": ["Becario de {D}", "Becaria de {D}"]},
}
SYLLABLES = ["ac", "me", "no", "va", "tek", "lum", "ar", "is", "quo", "zen", "pra", "ly", "cor", "dex", "fi", "ra", "on", "ex"]


def pick(rng: np.random.Generator, table: dict[str, tuple[float, object]], n: int) -> tuple[np.ndarray, np.ndarray]:
    names = np.array(list(table))
    weights = np.array([v[0] for v in table.values()], dtype=float)
    idx = rng.choice(len(names), size=n, p=weights / weights.sum())
    return names[idx], idx


def company_names(rng: np.random.Generator, n: int, first: int = 0) -> np.ndarray:
    """``n`` company names, numbered from ``first`` (the account's number in the whole CRM: names stay unique)."""
    parts = rng.integers(0, len(SYLLABLES), size=(n, 3))
    syl = np.array(SYLLABLES)
    base = np.char.add(np.char.add(syl[parts[:, 0]], syl[parts[:, 1]]), syl[parts[:, 2]])
    return np.char.add(np.char.capitalize(base), np.char.mod(" %d", np.arange(first, first + n)))


def job_titles(rng: np.random.Generator, seniority: np.ndarray, department: np.ndarray, lang: np.ndarray) -> np.ndarray:
    titles = np.empty(len(seniority), dtype=object)
    noise = rng.random(len(seniority))
    choice = rng.random(len(seniority))
    for lg in TITLE_TEMPLATES:
        for sen, templates in TITLE_TEMPLATES[lg].items():
            mask = (lang == lg) & (seniority == sen)
            if not mask.any():
                continue
            idx = np.flatnonzero(mask)
            pick = (choice[idx] * len(templates)).astype(int)
            words = DEPT_WORDS[lg]
            titles[idx] = [templates[p].format(D=words[d]) for p, d in zip(pick, department[idx], strict=True)]
    titles = titles.astype(str)
    lower = noise < 0.08
    upper = (noise >= 0.08) & (noise < 0.12)
    titles[lower] = np.char.lower(titles[lower])
    titles[upper] = np.char.upper(titles[upper])
    out = titles.astype(object)
    out[(noise >= 0.12) & (noise < 0.15)] = None
    return out
