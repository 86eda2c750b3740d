"""The words of a privacy certificate: its explanation, its executive summary, its method and references, its labels.

Everything here is generated from the certificate's own figures, so a sentence
never claims more than the signed document holds. `explain` and `summarize`
are written into the certificate when it is built (and so signed with it); the
method, the references and the plain-language labels of the technical
appendix are what `models.reports.certificate_pdf` prints around them.

Figures are written with `models.reports.pdf.fmt` (4 significant digits) and
rates as percentages with `pct` (3 significant digits), as in the PDF's tables.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from models.privacy.accounting import NEIGHBOURS
from models.reports.pdf import fmt

DEVELOPMENT_BANNER = "DEVELOPMENT KEY - not valid for production use"
KEY_SETTING = "CREDITTWIN_SIGNING_KEY_FILE"
VERIFY_COMMAND = "credittwin verify <certificate.json> --data <release folder> --pdf <certificate.pdf>"


# --------------------------------------------------------------------------- small helpers


def pct(share: Any) -> str:
    """A share as a percentage to 3 significant digits: 0.001972 -> "0.197%", 0.5 -> "50%"."""
    if share is None:
        return "-"
    return f"{float(share) * 100:.3g}%"


def join_names(names: Sequence[Any]) -> str:
    """"a", "a and b", "a, b and c"."""
    names = [str(n) for n in names]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def count(n: int, singular: str, plural: str | None = None) -> str:
    """"1 rule", "4 rules"."""
    return f"{n:,} {singular if n == 1 else (plural or singular + 's')}"


def verdict_of(rule: Mapping[str, Any]) -> str:
    """"pass", "warn" or "fail" (rules recorded before verdicts existed read from `passed`)."""
    return str(rule.get("verdict") or ("pass" if rule.get("passed") else "fail"))


def _reason(text: Any) -> str:
    """A skip reason without the "x skipped:" / "not measured:" lead-in the audit puts before it."""
    return re.sub(r"^(not measured|[a-z -]+ skipped)\s*:\s*", "", str(text).strip()).rstrip(".")


def humanise(key: Any) -> str:
    """A JSON key as words, for keys no label names: ``model_sha256`` -> "model sha256"."""
    return str(key).replace("_", " ").strip()


# --------------------------------------------------------------------------- rules


_RULE_LABELS = {
    "exact_match_rate": "Copies of unique training records",
    "dcr_share": "Released rows closer to training than to holdout",
    "mia_auc": "Membership-inference AUC",
    "inference": "Attribute inference",
    "anonymeter": "Anonymeter attacks",
    "anonymeter_singling_out": "Singling out (anonymeter)",
    "anonymeter_linkability": "Linkability (anonymeter)",
    "k_anonymity": "k-anonymity",
    "l_diversity": "l-diversity",
    "dp_auc_bound": "Membership AUC within the DP bound",
}
# the rules whose value must reach the threshold; every other rule's value must stay within it
_AT_LEAST = ("k_anonymity", "l_diversity")
_ATTACK_NAMES = {"distance": "distance attack", "density_ratio": "density-ratio attack"}


def rule_label(name: Any) -> str:
    """A rule id as a reviewer reads it: ``inference[default_flag]`` -> "Attribute inference of default_flag"."""
    name = str(name)
    match = re.fullmatch(r"(anonymeter_)?inference\[(.*)\]", name)
    if match:
        return f"Attribute inference of {match.group(2)}" + (" (anonymeter)" if match.group(1) else "")
    return _RULE_LABELS.get(name, humanise(name))


def in_sentence(text: str) -> str:
    """A label inside a sentence: its first letter lower-cased, unless it starts an acronym ("AUC")."""
    return text[:1].lower() + text[1:] if text[1:2].islower() or text[1:2] in ("-", " ") else text


def rule_limit(rule: Mapping[str, Any]) -> str:
    """The rule's threshold in words: "at most 0.6", "at least 5"."""
    if rule.get("threshold") is None:
        return "-"
    return ("at least " if rule.get("rule") in _AT_LEAST else "at most ") + fmt(rule.get("threshold"))


def _attack_name(name: Any) -> str:
    return _ATTACK_NAMES.get(str(name), humanise(name) + " attack")


# --------------------------------------------------------------------------- the explanation


def _membership(mia: Mapping[str, Any], limit: Any) -> list[str]:
    auc, (low, high) = mia["auc"], (mia.get("auc_ci") or [None, None])
    chance = ("not distinguishable from a coin flip at this sample size" if low is None or low <= 0.5
              else "better than a coin flip")
    out = [
        f"Given a real borrower's record and this release, the strongest membership attack measured "
        f"({_attack_name(mia.get('strongest', 'membership'))}) tells whether that borrower was in the training data "
        f"with an AUC of {fmt(auc)} (95% interval {fmt(low)} to {fmt(high)}; 0.5 is a coin flip, 1 is certainty), "
        f"{chance}" + (f"; the policy allows at most {fmt(limit)}." if limit is not None else ".")
    ]
    if mia.get("tpr_at_fpr") is None or mia.get("fpr") is None:
        return out
    fpr, tpr = mia["fpr"], mia["tpr_at_fpr"]
    target = mia.get("fpr_target", fpr)
    ci = mia.get("tpr_ci")
    interval = f" (95% interval {pct(ci[0])} to {pct(ci[1])})" if ci else ""
    no_better = ", no better than guessing" if tpr <= fpr else ""
    if mia.get("fpr_resolvable", fpr <= target):
        out.append(
            f"Tuned to wrongly accuse at most {pct(fpr)} of the borrowers who were not in the training data, the "
            f"attack correctly identifies {pct(tpr)} of those who were{interval}; guessing at random would identify "
            f"{pct(fpr)}{no_better}."
        )
    else:
        n_non = mia.get("n_non_members")
        who = f"The audit's {n_non:,} non-members are" if isinstance(n_non, int) else "The audit's non-members are"
        out.append(
            f"{who} too few to measure the attack at the target false-positive rate of {pct(target)} (one borrower "
            f"in {round(1 / target):,} wrongly accused): the lowest rate they can show is {pct(fpr)}. At that rate the "
            f"attack identifies {pct(tpr)} of the training borrowers{interval}, where guessing at random would "
            f"identify {pct(fpr)}{no_better}."
        )
    return out


_ATTACK_KINDS = (("inference[", "attribute inference"), ("anonymeter_inference[", "attribute inference"),
                 ("anonymeter_singling_out", "singling out"), ("anonymeter_linkability", "linkage"))


def _other_attacks(rules: Mapping[str, Mapping[str, Any]]) -> list[str]:
    attacks = [r for name, r in rules.items()
               if str(name).startswith(("inference[", "anonymeter_")) and r.get("value") is not None]
    if not attacks:
        return []
    kinds = []
    for prefix, kind in _ATTACK_KINDS:
        if any(str(r.get("rule")).startswith(prefix) for r in attacks) and kind not in kinds:
            kinds.append(kind)
    worst = max(attacks, key=lambda r: r["value"])
    sentence = (
        f"{join_names(kinds).capitalize()} {'were' if len(kinds) > 1 else 'was'} tested by comparing each attack's "
        "success on training borrowers with its success on holdout borrowers the generator never saw. The largest "
        f"excess risk that could not be ruled out (upper 95% bound) is {fmt(worst['value'])}, for "
        f"{in_sentence(rule_label(worst.get('rule')))}, against a margin of {fmt(worst.get('threshold'))}."
    )
    if verdict_of(worst) == "warn":
        sentence += (" At this sample size the audit can show that risk neither within nor above the margin, so the "
                     "rule is a warning (a rule fails only on evidence that the risk is above its margin).")
    else:
        sentence += " A rule fails only on evidence that the risk is above its margin."
    return [sentence]


def explain(document: Mapping[str, Any]) -> list[str]:
    """Plain sentences on what the certificate's figures mean for this release, generated from them.

    Every figure is written with `models.reports.pdf.fmt`, rates with `pct`, as in the PDF.
    """
    audit = document.get("audit") or {}
    rules = {r.get("rule"): r for r in document.get("rules") or []}
    threshold = {name: rule.get("threshold") for name, rule in rules.items()}
    anonymity = document.get("anonymity") or {}
    dp = (document.get("privacy") or {}).get("dp")
    out: list[str] = []

    mia = audit.get("mia") or {}
    if mia.get("auc") is not None:
        out.extend(_membership(mia, threshold.get("mia_auc")))
    elif mia.get("skipped"):
        out.append(f"Membership inference could not be measured on this book: {_reason(mia['skipped'])}.")

    dcr = audit.get("dcr") or {}
    if dcr.get("exact_match_rate") is not None:
        rate = dcr["exact_match_rate"]
        if rate == 0:
            out.append("No released row is a copy of a real training record (exact-match rate 0), so no real loan "
                       "record is published as it is.")
        else:
            out.append(f"{pct(rate)} of the released rows equal a real training record; the policy allows at most "
                       f"{pct(threshold.get('exact_match_rate'))} beyond what coincidence explains.")
    if dcr.get("share_closer_to_train") is not None:
        out.append(
            f"{pct(dcr['share_closer_to_train'])} of the released rows lie closer to a training record than to a "
            "holdout record the generator never saw (50% means no memorisation); the policy allows at most "
            f"{pct(threshold.get('dcr_share'))}."
        )

    out.extend(_other_attacks(rules))
    anonymeter = audit.get("anonymeter") or {}
    if anonymeter.get("skipped"):
        out.append(f"The anonymeter attacks (singling out, linkage and inference) were not run: "
                   f"{_reason(anonymeter['skipped'])}.")
    warned = [r for r in rules.values() if verdict_of(r) == "warn"]
    if warned:
        many = len(warned) > 1
        out.append(
            f"{count(len(warned), 'rule')} could not be shown to pass and {'are' if many else 'is'} certified as "
            f"{'warnings' if many else 'a warning'}, not {'passes' if many else 'a pass'}: "
            + join_names(in_sentence(rule_label(r.get("rule"))) for r in warned) + "; each rule's finding says why."
        )

    if dp:
        sentence = (
            f"The release is differentially private with epsilon {fmt(dp.get('epsilon'))} and delta "
            f"{fmt(dp.get('delta'))} (neighbouring tapes: {NEIGHBOURS}; composed by the {dp.get('accountant', '-')} "
            "accountant): whatever else an attacker knows, no membership attack, including ones not yet invented, "
            f"can reach an AUC above {fmt(dp.get('auc_bound'))}"
        )
        if mia.get("auc") is not None:
            sentence += f"; the attacks measured here reached {fmt(mia['auc'])}"
        out.append(sentence + ".")
    else:
        out.append("The release is not differentially private: its protection is measured against the attacks "
                   "above, not proven against every possible attack.")

    measured = audit.get("anonymity") or {}
    qis = [str(q) for q in anonymity.get("quasi_identifiers") or measured.get("quasi_identifiers") or []]
    k = anonymity.get("k_achieved")
    if k is not None:
        listed = f" ({', '.join(qis)})" if qis else ""
        known = join_names(qis) if qis else "quasi-identifiers"
        out.append(
            f"Every combination of the quasi-identifiers{listed} is shared by at least {fmt(k)} loans, so someone who "
            f"knows a borrower's {known} can narrow the borrower down to no fewer than {fmt(k)} loans."
        )
    l_value = anonymity.get("l_achieved")
    if l_value is not None:
        sensitive = anonymity.get("sensitive") or measured.get("sensitive") or []
        by_column = anonymity.get("l_by_column") or {}
        columns = (f" ({', '.join(f'{c}: {fmt(v)}' for c, v in by_column.items())})" if by_column
                   else f" ({', '.join(str(s) for s in sensitive)})" if sensitive else "")
        out.append(
            f"Within every such group, each sensitive column takes at least {fmt(l_value)} distinct values{columns}, "
            "so knowing which group a borrower belongs to does not reveal the borrower's sensitive values outright."
        )

    out.append(
        "What this release does not protect against: aggregate statistics (default rates, distributions, correlations "
        "between columns) are preserved by design, so anything true of the borrowers as a group, or of a large enough "
        "subgroup, can be learned from it, and holds for each borrower in such a subgroup whether or not that "
        "borrower was in the tape."
    )
    if not dp:
        out.append("A stronger attack than those measured here is not bounded by any proof; re-audit when attacks improve.")
    else:
        out.append(
            "The audit figures in this certificate (attack AUCs, distances to closest records, k and l) are measured on "
            "the real data and are not covered by epsilon: only the synthetic data carries the differential privacy "
            "guarantee."
        )
    return out


# --------------------------------------------------------------------------- the executive summary


def _scope(document: Mapping[str, Any]) -> str:
    files = document.get("released_files") or []
    released = join_names(f"{f.get('name')} ({count(f['rows'], 'row')})" if isinstance(f.get("rows"), int)
                          else str(f.get("name")) for f in files)
    sentence = f"{count(len(files), 'file')} released: {released}."
    scope = document.get("scope") or {}
    sizes = (document.get("audit") or {}).get("sizes") or {}
    train, holdout = scope.get("train_rows", sizes.get("train_rows")), scope.get("holdout_rows", sizes.get("holdout_rows"))
    inputs = scope.get("input_files") or []
    source = f"the tape {join_names(inputs)}" if inputs else "the lender's tape"
    if isinstance(train, int) and isinstance(holdout, int):
        sentence += (f" Synthesised from {source}: {count(train + holdout, 'loan')}, of which {train:,} trained the "
                     f"generator and {holdout:,} were held out to audit it.")
    elif inputs:
        sentence += f" Synthesised from {source}."
    return sentence


def _period(document: Mapping[str, Any]) -> str | None:
    scope = document.get("scope")
    if not isinstance(scope, Mapping):
        return None  # a certificate issued before the scope was recorded
    period = scope.get("period")
    if not period:
        return "The tape has no date column, so no period is stated."
    if period.get("withheld"):
        return f"Not stated: {period['withheld']} ({period.get('column')})."
    return f"{period.get('column')} from {period.get('first')} to {period.get('last')} (months of the tape's loans)."


def _verdict_sentence(document: Mapping[str, Any]) -> str:
    rules = document.get("rules") or []
    warned = [r for r in rules if verdict_of(r) == "warn"]
    passed = [r for r in rules if verdict_of(r) == "pass"]
    if not warned:
        return f"PASS: all {count(len(rules), 'audit rule')} pass."
    many = len(warned) > 1
    return (f"PASS with {count(len(warned), 'warning')}: {len(passed)} of {count(len(rules), 'audit rule')} pass; "
            f"{join_names(in_sentence(rule_label(r.get('rule'))) for r in warned)} could not be shown to pass "
            f"({'warnings' if many else 'a warning'}, not {'failures' if many else 'a failure'}).")


def _guarantee(document: Mapping[str, Any]) -> str:
    anonymity = document.get("anonymity") or {}
    dp = (document.get("privacy") or {}).get("dp")
    qis = [str(q) for q in anonymity.get("quasi_identifiers") or []]
    parts = []
    if anonymity.get("k_achieved") is not None:
        parts.append(f"k-anonymous with k = {fmt(anonymity['k_achieved'])}" + (f" over {join_names(qis)}" if qis else ""))
    if anonymity.get("l_achieved") is not None:
        sensitive = list(anonymity.get("l_by_column") or anonymity.get("sensitive") or [])
        parts.append(f"l-diverse with l = {fmt(anonymity['l_achieved'])}"
                     + (f" on {join_names(sensitive)}" if sensitive else ""))
    anonymous = ", and ".join(parts)
    if dp:
        head = (f"Differentially private with epsilon {fmt(dp.get('epsilon'))} and delta {fmt(dp.get('delta'))} "
                f"(neighbouring tapes: {NEIGHBOURS})")
        return head + (f"; {anonymous}." if anonymous else ".")
    return ("Not differentially private" + (f"; {anonymous}" if anonymous else "")
            + ": the protection is measured against the attacks run, not proven against every attack.")


def _strongest(document: Mapping[str, Any]) -> str:
    audit = document.get("audit") or {}
    rules = {r.get("rule"): r for r in document.get("rules") or []}
    mia = audit.get("mia") or {}
    if mia.get("auc") is not None:
        low, high = mia.get("auc_ci") or [None, None]
        limit = (rules.get("mia_auc") or {}).get("threshold")
        chance = "not distinguishable from a coin flip" if low is None or low <= 0.5 else "better than a coin flip"
        sentence = (f"Membership inference ({_attack_name(mia.get('strongest', 'membership'))}): AUC {fmt(mia['auc'])} "
                    f"(95% interval {fmt(low)} to {fmt(high)})" + (f" against a limit of {fmt(limit)}" if limit is not None
                                                                      else "") + f", {chance}.")
    elif mia.get("skipped"):
        sentence = f"Membership inference not measured: {_reason(mia['skipped'])}."
    else:
        sentence = "Membership inference not measured."
    attacks = [r for name, r in rules.items()
               if str(name).startswith(("inference[", "anonymeter_")) and r.get("value") is not None]
    if attacks:
        worst = max(attacks, key=lambda r: r["value"])
        sentence += (f" Largest other attack risk: {in_sentence(rule_label(worst.get('rule')))}, upper bound "
                     f"{fmt(worst['value'])} against a margin of {fmt(worst.get('threshold'))} "
                     f"({_VERDICT_WORDS.get(verdict_of(worst), verdict_of(worst))}).")
    return sentence


_VERDICT_WORDS = {"pass": "passes", "warn": "a warning", "fail": "fails"}


def summarize(document: Mapping[str, Any]) -> dict[str, str]:
    """The executive summary of a certificate, one sentence per line of its first page.

    Returns:
        ``{"scope", "period", "verdict", "guarantee", "strongest_attack"}``
        (``period`` only when the certificate records its scope).
    """
    summary = {"scope": _scope(document), "period": _period(document), "verdict": _verdict_sentence(document),
               "guarantee": _guarantee(document), "strongest_attack": _strongest(document)}
    return {key: value for key, value in summary.items() if value is not None}


# --------------------------------------------------------------------------- method and references


REFERENCES: dict[str, str] = {
    "mondrian": "LeFevre, K., DeWitt, D. J. and Ramakrishnan, R. (2006). Mondrian multidimensional k-anonymity. "
                "Proceedings of the 22nd International Conference on Data Engineering (ICDE).",
    "ldiversity": "Machanavajjhala, A., Kifer, D., Gehrke, J. and Venkitasubramaniam, M. (2007). l-Diversity: privacy "
                  "beyond k-anonymity. ACM Transactions on Knowledge Discovery from Data 1(1).",
    "dwork": "Dwork, C. and Roth, A. (2014). The algorithmic foundations of differential privacy. Foundations and "
             "Trends in Theoretical Computer Science 9(3-4).",
    "abadi": "Abadi, M., Chu, A., Goodfellow, I., McMahan, H. B., Mironov, I., Talwar, K. and Zhang, L. (2016). Deep "
             "learning with differential privacy. Proceedings of ACM CCS 2016.",
    "mironov": "Mironov, I. (2017). Renyi differential privacy. IEEE 30th Computer Security Foundations Symposium (CSF).",
    "dp_accounting": "Google. dp-accounting: privacy accountants (RDP, PLD) of the Google differential-privacy "
                     "library, github.com/google/differential-privacy (python/dp_accounting).",
    "opendp": "The OpenDP Library (opendp.org): discrete Laplace noise on integer counts, sampled exactly.",
    "kairouz": "Kairouz, P., Oh, S. and Viswanath, P. (2015). The composition theorem for differential privacy. "
                "Proceedings of the 32nd International Conference on Machine Learning (ICML).",
    "dcr": "Park, N., Mohammadi, M., Gorde, K., Jajodia, S., Park, H. and Kim, Y. (2018). Data synthesis based on "
           "generative adversarial networks. Proceedings of the VLDB Endowment 11(10) (distance to closest record).",
    "domias": "van Breugel, B., Sun, H., Qian, Z. and van der Schaar, M. (2023). Membership inference attacks against "
              "synthetic data through overfitting detection (DOMIAS). Proceedings of AISTATS 2023.",
    "carlini": "Carlini, N., Chien, S., Nasr, M., Song, S., Terzis, A. and Tramer, F. (2022). Membership inference "
               "attacks from first principles. IEEE Symposium on Security and Privacy.",
    "delong": "DeLong, E. R., DeLong, D. M. and Clarke-Pearson, D. L. (1988). Comparing the areas under two or more "
              "correlated receiver operating characteristic curves: a nonparametric approach. Biometrics 44(3).",
    "newcombe": "Newcombe, R. G. (1998). Interval estimation for the difference between independent proportions: "
                "comparison of eleven methods. Statistics in Medicine 17(8).",
    "anonymeter": "Giomi, M., Boenisch, F., Wehmeyer, C. and Tasnadi, B. (2023). A unified framework for quantifying "
                  "privacy risk in synthetic data. Proceedings on Privacy Enhancing Technologies 2023(2).",
}


def method_sections(document: Mapping[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(title, paragraph, reference keys) for each method the certificate's figures come from.

    The paragraphs say what was done for this release (from the document), so
    a method that did not run says so instead of describing what it would do.
    """
    audit = document.get("audit") or {}
    anonymity = document.get("anonymity") or {}
    dp = (document.get("privacy") or {}).get("dp")
    qis = [str(q) for q in anonymity.get("quasi_identifiers") or []]
    sensitive = [str(s) for s in anonymity.get("sensitive") or []]
    sections: list[tuple[str, str, list[str]]] = [(
        "k-anonymity by Mondrian generalisation",
        "The released quasi-identifiers" + (f" ({join_names(qis)})" if qis else "") + " are generalised into ranges "
        "and category groups by multidimensional Mondrian partitioning, so that every combination of released values "
        f"is shared by at least k loans (k required {fmt(anonymity.get('k_required'))}, achieved "
        f"{fmt(anonymity.get('k_achieved'))}); the outermost ranges are open-ended, so the real extremes are never "
        "published.",
        ["mondrian"],
    )]
    if anonymity.get("l_status"):
        l_text = f"l-diversity was not applied: {anonymity['l_status']}."
    else:
        l_text = (f"Within every equivalence class each sensitive column" + (f" ({join_names(sensitive)})" if sensitive
                                                                           else "")
                  + f" takes at least l distinct values (distinct l-diversity; l required "
                  f"{fmt(anonymity.get('l_required'))}, achieved {fmt(anonymity.get('l_achieved'))}).")
    sections.append(("l-diversity", l_text, ["ldiversity"]))
    if dp:
        kinds = sorted({str((e.get("mechanism") or {}).get("kind")) for e in dp.get("ledger_entries") or []
                        if (e.get("mechanism") or {}).get("kind")})
        mechanisms = {"laplace": "the discrete Laplace mechanism on integer counts (sampled exactly with OpenDP)",
                      "pure": "mechanisms with an already accounted (epsilon, delta), such as thresholded stability "
                      "histograms", "gaussian": "the Gaussian mechanism",
                      "subsampled_gaussian": "DP-SGD's Poisson-subsampled Gaussian mechanism"}
        refs = ["dwork"] + (["abadi"] if "subsampled_gaussian" in kinds else []) + ["mironov", "dp_accounting"]
        refs += ["opendp"] if {"pure", "laplace"} & set(kinds) else []
        used = join_names(mechanisms.get(k, k) for k in kinds) or "the mechanisms in the ledger"
        sections.append((
            "Differential privacy and its accountant",
            f"The generator was trained with {used}. Every mechanism was charged to the tenant's privacy ledger before "
            f"it ran, and the charges are composed by the {dp.get('accountant', '-')} accountant (pure-epsilon "
            "mechanisms add up; Gaussian ones are composed as Renyi differential privacy or a privacy loss "
            f"distribution by the dp-accounting library) into epsilon {fmt(dp.get('epsilon'))} and delta "
            f"{fmt(dp.get('delta'))}. "
            f"Neighbouring tapes: {NEIGHBOURS}. The largest membership AUC that (epsilon, delta) allows, "
            f"{fmt(dp.get('auc_bound'))}, follows from the hypothesis-testing view of differential privacy.",
            refs + ["kairouz"],
        ))
    else:
        sections.append(("Differential privacy",
                         "Not used for this release: no privacy budget was spent, and no attack is bounded by proof.",
                         ["dwork"]))
    sections.append((
        "Distance to closest record (DCR)",
        "Each released row's distance to its closest training record is compared with its distance to the closest "
        "holdout record (a mixed-type distance: numbers scaled by their interquartile range, categories equal or "
        "not, generalised labels at their distance to the range). An honest generator puts half the rows closer to "
        "each; exact copies of records unique in the tape are counted against what coincidence explains.",
        ["dcr"],
    ))
    mia = audit.get("mia") or {}
    sections.append((
        "Membership inference by density ratio",
        "The attack of DOMIAS: a candidate record is scored by the log ratio of the release's density to the "
        "population's (a reference sample of the holdout) around it, both estimated from nearest-neighbour "
        "distances, so a record around which the release is denser than the population is called a member; a plain "
        "distance attack runs beside it. Members are training records and non-members holdout records; each "
        "attack's AUC carries a DeLong 95% interval, and its true-positive rate at a 0.1% false-positive rate a "
        "bootstrap interval." + (f" Not measured here: {_reason(mia['skipped'])}." if mia.get("skipped") else ""),
        ["domias", "delong", "carlini"],
    ))
    sections.append((
        "Attribute inference",
        "For each sensitive column the attacker knows every other column of a target record, takes the nearest "
        "released row and guesses its value; success on training records is compared with success on holdout "
        "records by a two-proportion test (one-sided 95% Newcombe bounds on the excess risk): a rule fails on "
        "evidence of a risk above its margin, passes when the upper bound is within it, and warns otherwise.",
        ["newcombe"],
    ))
    anonymeter = audit.get("anonymeter") or {}
    sections.append((
        "Anonymeter attacks",
        ("Singling out, linkability and attribute inference as implemented by anonymeter, with the holdout as "
         "control, judged by the same two-proportion test."
         + (f" Not run for this release: {_reason(anonymeter['skipped'])}." if anonymeter.get("skipped") else "")),
        ["anonymeter", "newcombe"],
    ))
    return sections


# --------------------------------------------------------------------------- plain labels for the appendix


FIGURE_LABELS: dict[str, dict[str, str]] = {
    "source": {
        "input_sha256": "input tape SHA-256",
        "code_version": "CreditTwin code version",
        "asset_code_version": "certificate step code version",
        "dagster_run_id": "run that issued the certificate",
        "data_versions": "data version",
        "content_sha256": "content SHA-256",
        "materialized_by_run": "made by run",
    },
    "generator": {
        "engine": "generator engine",
        "privacy": "privacy of the generator",
        "columns_modelled": "columns modelled",
        "sampling": "sampling",
        "rows": "rows",
        "seed": "seed",
        "model_sha256": "fitted model SHA-256",
        "conditions": "conditions",
        "segmentation": "segmentation",
        "anonymization": "anonymization",
        "method": "method",
        "information_loss": "information loss (normalised certainty penalty)",
        "class_count": "equivalence classes",
        "column": "segmented by",
        "pooled_rows": "rows pooled into other segments",
        "segments": "segments",
        "value": "segment",
        "category_merges": "categories merged",
    },
    "anonymity": {
        "k_required": "k required",
        "k_achieved": "k achieved (smallest equivalence class)",
        "l_required": "l required",
        "l_achieved": "l achieved (fewest distinct sensitive values in a class)",
        "l_by_column": "l achieved per sensitive column",
        "l_status": "l-diversity status",
        "suppression": "suppression (rows dropped)",
        "quasi_identifiers": "quasi-identifiers",
        "sensitive": "sensitive columns",
    },
    "policy": {
        "k": "k required",
        "l": "l required",
        "max_exact_match_rate": "largest share of copies of unique training records",
        "max_dcr_share": "largest share of released rows closer to training",
        "max_mia_auc": "largest membership-inference AUC",
        "max_inference_risk": "attribute-inference risk margin",
        "max_anonymeter_risk": "anonymeter risk margin",
        "require_measured": "a required rule that cannot be measured fails",
        "run_anonymeter": "anonymeter attacks run",
        "n_attacks": "attacks per anonymeter evaluator",
        "anonymeter_sample_size": "rows sampled for anonymeter",
        "sample_size": "rows sampled for the audit",
        "seed": "audit seed",
    },
    "dcr": {
        "metric": "distance",
        "share_closer_to_train": "share of released rows closer to train than to holdout",
        "share_ci": "95% interval of that share, as if the released rows were independent",
        "share_null_sd": "how far chance alone moves that share at this size (one standard deviation, train and "
        "holdout rows swapped at random)",
        "share_p_value": "chance of a share this high without a leak",
        "ties": "released rows equally close to both",
        "exact_match_rate": "share of released rows equal to a unique train record",
        "exact_matches": "released rows equal to a unique train record",
        "exact_match_rate_holdout": "share of released rows equal to a unique holdout record",
        "exact_matches_holdout": "released rows equal to a unique holdout record",
        "exact_match_rate_any_sampled_train_row": "share of released rows equal to any sampled train row",
        "exact_match_scope": "where exact matches were looked for",
        "unique_train_records": "train records unique in the tape",
        "unique_holdout_records": "holdout records unique in the tape",
        "coincidences_expected": "train matches expected by coincidence",
        "coincidences_explained": "train matches coincidence explains (95%)",
        "exact_copy_rate": "share of released rows that are copies beyond coincidence",
        "median_dcr_train": "median distance to the closest train record",
        "median_dcr_holdout": "median distance to the closest holdout record",
        "p05_dcr_train": "5th percentile of the distance to the closest train record",
        "p05_dcr_holdout": "5th percentile of the distance to the closest holdout record",
        "nndr_median_train": "median nearest-neighbour distance ratio, train",
        "nndr_median_holdout": "median nearest-neighbour distance ratio, holdout",
        "nndr_p05_train": "5th percentile nearest-neighbour distance ratio, train",
        "nndr_p05_holdout": "5th percentile nearest-neighbour distance ratio, holdout",
        "n_released": "released rows compared",
        "n_train": "train rows compared",
        "n_holdout": "holdout rows compared",
    },
    "mia": {
        "attack": "attack",
        "strongest": "strongest attack",
        "auc": "AUC of the strongest attack",
        "auc_ci": "95% interval of the AUC (DeLong)",
        "tpr_at_fpr": "true-positive rate at the false-positive rate used",
        "tpr_ci": "95% interval of that rate (bootstrap)",
        "fpr": "false-positive rate used",
        "fpr_target": "target false-positive rate",
        "fpr_resolvable": "target rate measurable with these non-members",
        "n_members": "members attacked (train records)",
        "n_non_members": "non-members attacked (holdout records)",
        "n_reference": "reference records (population sample)",
        "skipped": "not measured",
    },
    "anonymeter": {
        "n_attacks": "attacks per evaluator",
        "n_requested": "attacks requested",
        "skipped": "not run",
        "not_installed": "anonymeter not installed",
    },
    "inference": {
        "attack": "attack",
        "tolerance": "a guess counts when",
        "skipped": "not measured",
        "not_applicable": "not applicable",
    },
    "dp": {
        "epsilon": "epsilon spent",
        "delta": "delta spent",
        "auc_bound": "largest membership AUC the spend allows",
        "fpr": "false-positive rate",
        "tpr_bound_at_fpr": "largest true-positive rate the spend allows at that rate",
        "empirical_auc": "membership AUC measured",
        "empirical_tpr_at_fpr": "true-positive rate measured",
        "empirical_within_bound": "measured AUC within the bound",
    },
    "anonymity_measured": {
        "classes": "equivalence classes",
        "k": "smallest equivalence class (k)",
        "l": "fewest distinct sensitive values in a class (l)",
        "l_by_column": "l per sensitive column",
        "quasi_identifiers": "quasi-identifiers",
        "sensitive": "sensitive columns",
        "sensitive_not_released": "sensitive columns not released",
    },
    "sizes": {
        "compared_columns": "columns compared",
        "released_rows": "released rows",
        "released_sample": "released rows sampled",
        "released_unique": "unique released rows",
        "train_rows": "train rows",
        "train_sample": "train rows sampled",
        "train_unique": "unique train rows",
        "holdout_rows": "holdout rows",
        "holdout_sample": "holdout rows sampled",
        "holdout_unique": "unique holdout rows",
        "mia_members": "membership attack: members",
        "mia_non_members": "membership attack: non-members",
        "mia_reference": "membership attack: reference records",
    },
}


def label(section: str, key: Any) -> str:
    """The plain-language label of `key` in `section` (see `FIGURE_LABELS`), else the key in words."""
    return FIGURE_LABELS.get(section, {}).get(str(key), humanise(key))


def ordered(section: str, figures: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The items of `figures` in the order `FIGURE_LABELS` lists their keys, keys it does not know after them."""
    known = list(FIGURE_LABELS.get(section, {}))
    return sorted(figures.items(), key=lambda item: (known.index(item[0]) if item[0] in known else len(known), item[0]))


def plain_value(value: Any, section: str = "") -> str:
    """A value as words: scalars by `fmt`, lists joined, mappings as "key: value" pairs (never dotted keys).

    A nested key is shown by its label when `section` names it, else as it is
    (it is usually data: a column name, a category, an asset).
    """
    if isinstance(value, Mapping):
        if not value:
            return "none"
        names = FIGURE_LABELS.get(section, {})
        return "; ".join(f"{names.get(str(k), str(k))}: {plain_value(v, section)}" for k, v in ordered(section, value))
    if isinstance(value, (list, tuple)):
        if not value:
            return "none"
        if any(isinstance(v, (Mapping, list, tuple)) for v in value):
            return " | ".join(plain_value(v, section) for v in value)
        return ", ".join(fmt(v) for v in value)
    return fmt(value)
