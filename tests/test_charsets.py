"""Text encodings tmix tells apart without being told: Central European text read as Windows-1252 (refused, with the
codec to convert from), Western European text (read), UTF-16 without a byte-order mark or any ASCII (read)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from tmixcli.documents import load_document
from tmixcli.errors import TmixError

CENTRAL = {  # a few sentences of minutes, as a real document would have them
    "cs": "Představenstvo společnosti zasedalo v úterý v Brně. Členové schválili roční rozpočet ve výši "
          "dvaačtyřiceti milionů korun a požádali ředitelku o podrobnou zprávu o rizicích. Paní Jiřina Dvořáková "
          "představila plán na rozšíření výroby, který počítá s novou halou a třiceti pracovníky. Příští schůze se "
          "uskuteční v březnu, kdy budou projednány výsledky prvního čtvrtletí.\n",
    "sk": "Predstavenstvo spoločnosti zasadalo v utorok v Bratislave. Členovia schválili ročný rozpočet vo výške "
          "42 miliónov eur a požiadali riaditeľku o podrobnú správu o rizikách. Pani Ľubica Horváthová predstavila "
          "plán na rozšírenie výroby, ktorý počíta s novou halou a tridsiatimi pracovníkmi. Ďalšie zasadnutie sa "
          "uskutoční v marci, keď sa prerokujú výsledky prvého polroka.\n",
    "pl": "Posiedzenie zarządu odbyło się we wtorek w Krakowie. Członkowie zatwierdzili roczny budżet w wysokości "
          "czterdziestu dwóch milionów złotych i poprosili dyrektorkę o szczegółowe sprawozdanie dotyczące ryzyka. "
          "Pani Małgorzata Wójcik przedstawiła plan rozbudowy zakładu, który przewiduje nową halę.\n",
    "hu": "Az igazgatóság kedden ülésezett Budapesten. A tagok jóváhagyták a negyvenkét millió forintos éves "
          "költségvetést, és részletes jelentést kértek az igazgatótól a kockázatokról. Kovács Erzsébet bemutatta "
          "a gyár bővítésének tervét, amely egy új csarnokkal és harminc új munkatárssal számol. A következő "
          "ülésre márciusban kerül sor, amikor megvitatják az első negyedév eredményeit. Szerinte a fejlesztés "
          "hosszú távon megtérül, erősíti a cég versenyképességét, és az új rendszer használata egyszerű lesz.\n",
    "sl": "Seja uprave je bila v torek v Ljubljani. Člani so potrdili letni proračun v višini dvainštirideset "
          "milijonov evrov in od direktorice zahtevali podrobno poročilo o tveganjih. Gospa Mojca Žagar je "
          "predstavila načrt za razširitev proizvodnje, ki predvideva novo halo in trideset novih delavcev. "
          "Naslednji sestanek bo marca, ko bodo obravnavali rezultate prvega četrtletja.\n",
    "hr": "Sjednica uprave održana je u utorak u Zagrebu. Članovi su odobrili godišnji proračun od četrdeset dva "
          "milijuna eura i zatražili od direktorice detaljno izvješće o rizicima. Gospođa Ivana Horvat predstavila "
          "je plan proširenja proizvodnje, koji predviđa novu halu i trideset novih radnika.\n",
    "ro": "Consiliul de administraţie s-a întrunit marţi la Bucureşti. Membrii au aprobat bugetul anual de "
          "patruzeci şi două de milioane de lei şi au cerut directoarei un raport detaliat privind riscurile. "
          "Doamna Ioana Popescu a prezentat planul de extindere a fabricii, care prevede o hală nouă şi treizeci "
          "de angajaţi.\n",
}
WESTERN = {
    "fr": "Le conseil d'administration s'est réuni mardi à Lyon. Les membres ont approuvé le budget annuel de "
          "quarante-deux millions d'euros et ont demandé à la directrice un rapport détaillé sur les risques. "
          "Mme Hélène Lefèvre a présenté le projet d'agrandissement de l'usine, qui prévoit un nouveau hall et "
          "trente employés supplémentaires. La prochaine réunion aura lieu en mars, où seront examinés les "
          "résultats du premier trimestre.\n",
    "de": "Der Vorstand tagte am Dienstag in München. Die Mitglieder genehmigten den Jahreshaushalt von "
          "zweiundvierzig Millionen Euro und baten die Geschäftsführerin um einen ausführlichen Bericht über die "
          "Risiken. Frau Sabine Größer stellte den Plan zur Erweiterung des Werks vor, der eine neue Halle und "
          "dreißig zusätzliche Mitarbeiter vorsieht.\n",
    "es": "El consejo de administración se reunió el martes en Sevilla. Los miembros aprobaron el presupuesto "
          "anual de cuarenta y dos millones de euros y pidieron a la directora un informe detallado sobre los "
          "riesgos. La señora María José Núñez presentó el plan de ampliación de la fábrica. ¿Cuándo será la "
          "próxima reunión? Tendrá lugar en marzo.\n",
    "pt": "O conselho de administração reuniu-se na terça-feira em Lisboa. Os membros aprovaram o orçamento anual "
          "de quarenta e dois milhões de euros e pediram à diretora um relatório detalhado sobre os riscos. A Sra. "
          "Conceição Gonçalves apresentou o plano de expansão da fábrica, que prevê um novo pavilhão e trinta "
          "funcionários adicionais.\n",
    "da": "Bestyrelsen holdt møde tirsdag i Århus. Medlemmerne godkendte det årlige budget på toogfyrre "
          "millioner kroner og bad direktøren om en grundig rapport om risiciene. Fru Søs Mølgaard fremlagde "
          "planen for udvidelsen af fabrikken. Næste møde finder sted i marts, hvor resultaterne for første "
          "kvartal skal gennemgås.\n",
    "no": "Styret hadde møte tirsdag i Tromsø. Medlemmene godkjente årsbudsjettet på førtito millioner kroner og "
          "ba daglig leder om en grundig rapport om risikoene. Fru Bjørg Sæther la fram planen for utvidelsen av "
          "fabrikken. Neste møte blir holdt i mars, når resultatene for første kvartal skal gjennomgås.\n",
    "sv": "Styrelsen sammanträdde på tisdagen i Göteborg. Ledamöterna godkände årsbudgeten på fyrtiotvå miljoner "
          "kronor och bad verkställande direktören om en utförlig rapport om riskerna. Fru Åsa Lindström "
          "presenterade planen för utbyggnaden av fabriken. Nästa möte äger rum i mars.\n",
    "is": "Stjórnin kom saman á þriðjudaginn í Reykjavík. Stjórnarmenn samþykktu fjárhagsáætlun ársins upp á "
          "fjörutíu og tvær milljónir króna og báðu framkvæmdastjórann um ítarlega skýrslu um áhættuþætti. "
          "Guðrún Þórðardóttir kynnti áætlun um stækkun verksmiðjunnar. Næsti fundur verður haldinn í mars.\n",
    "fi": "Hallitus kokoontui tiistaina Tampereella. Jäsenet hyväksyivät neljänkymmenenkahden miljoonan euron "
          "vuosibudjetin ja pyysivät toimitusjohtajalta yksityiskohtaisen raportin riskeistä. Päivi Mäkelä "
          "esitteli tehtaan laajennussuunnitelman. Seuraava kokous pidetään maaliskuussa.\n",
    "it": "Il consiglio di amministrazione si è riunito martedì a Bologna. La signora Lucia Ferrà ha presentato il "
          "piano di ampliamento dello stabilimento, che prevede trenta dipendenti in più. Perché la città è "
          "cresciuta, così è cresciuta l'attività.\n",
    "ca": "El consell d'administració es va reunir dimarts a València. La senyora Mercè Puig va presentar el pla "
          "d'ampliació de la fàbrica. La pròxima reunió tindrà lloc al març. La col·laboració amb l'època "
          "anterior és important.\n",
    "et": "Juhatus kogunes teisipäeval Tallinnas. Liikmed palusid juhatuse esimehelt põhjalikku aruannet riskide "
          "kohta. Proua Külli Tamm tutvustas tehase laiendamise kava. Šokolaadi ja žürii küsimus lükati edasi, "
          "sest õhtul oli vähe aega.\n",
    "en": "The board met on Tuesday in London. Søren Sørensen, who chairs the audit committee, asked Hélène "
          "Lefèvre for a report on the risks of the new plant in Genève. Bjørn ate crème brûlée at the café, and "
          "the smørrebrød in Århus was worth the trip.\n",  # names and loanwords of several Western languages
}
CENTRAL_CODECS = [(lang, codec) for lang in CENTRAL for codec in ("cp1250", "iso8859_2")]
UNSPACED = {"zh": "董事会于周二开会批准了年度预算并要求总经理提交一份关于风险的详细报告，公司收入增长了百分之十二。",
            "ja": "取締役会は火曜日に開かれ、年間予算を承認し、リスクに関する詳細な報告書を求めました。",
            "th": "คณะกรรมการประชุมเมื่อวันอังคารและอนุมัติงบประมาณประจำปีพร้อมขอรายงานความเสี่ยงโดยละเอียด"}


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def refusal(path: str) -> str:
    with pytest.raises(TmixError) as info:
        load_document(path)
    assert info.value.code == 2 and "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("lang, codec", CENTRAL_CODECS)
def test_central_european_text_is_refused_with_the_codec_to_convert_from(tmp_path, lang, codec):
    """Czech "předseda" in Windows-1250 reads "pøedseda" as Windows-1252 (valid letters, mojibake): refused, naming
    a codec that gives the text back."""
    raw = CENTRAL[lang].encode(codec)
    message = refusal(write(tmp_path, f"{lang}.txt", raw))
    assert "is not UTF-8 and its text looks Central European (Windows-1250 or ISO-8859-2)" in message, message
    iconv = re.search(r"iconv -f (\S+) -t UTF-8$", message).group(1)
    assert raw.decode({"CP1250": "cp1250", "ISO-8859-2": "iso8859_2"}[iconv]) == CENTRAL[lang]


def test_central_european_html_without_a_charset_is_not_read_as_western(tmp_path):
    page = "<html><body><p>" + CENTRAL["cs"] + "</p></body></html>"
    assert "HTML in an unknown encoding" in refusal(write(tmp_path, "cs.html", page.encode("cp1250")))


@pytest.mark.parametrize("lang", WESTERN)
def test_western_european_text_is_still_read(tmp_path, lang):
    path = write(tmp_path, f"{lang}.txt", WESTERN[lang].encode("cp1252"))
    doc = load_document(path)
    assert doc.text == WESTERN[lang].strip() and doc.notes == (f"{path} is not UTF-8; read it as Windows-1252 "
                                                               "(Western European)",)


@pytest.mark.parametrize("codec, note", [("utf-16-le", "UTF-16 LE"), ("utf-16-be", "UTF-16 BE")])
@pytest.mark.parametrize("lang", UNSPACED)
def test_utf16_without_a_bom_or_any_ascii_is_read(tmp_path, lang, codec, note):
    """Chinese, Japanese or Thai without a space, digit or newline: no NUL byte says UTF-16, the text does."""
    path = write(tmp_path, f"{lang}.txt", UNSPACED[lang].encode(codec))
    doc = load_document(path)
    assert doc.text == UNSPACED[lang] and doc.notes == (f"{path} has no byte-order mark; read it as {note}",)


def test_utf16_without_ascii_and_a_nul_byte_in_a_character_is_read(tmp_path):
    """一 (U+4E00) has a NUL byte: the text is still not taken for binary data."""
    text = "一" + UNSPACED["zh"]
    assert load_document(write(tmp_path, "zh.txt", text.encode("utf-16-le"))).text == text


@pytest.mark.parametrize("codec, lang", [("shift_jis", "ja"), ("euc_jp", "ja"), ("gbk", "zh"), ("big5", "zh"),
                                         ("euc_kr", "ko"), ("tis_620", "th")])
def test_multibyte_cjk_text_is_refused_not_read_as_utf16_or_stray_bytes(tmp_path, codec, lang):
    """Shift-JIS read as UTF-16 BE is all CJK ideographs, GBK and Big5 all Hangul; and a pair of their bytes is valid
    UTF-8 now and then, so they once read as UTF-8 with many stray bytes: refused, with a hint to convert."""
    text = "이사회는화요일에열렸고연간예산을승인했습니다" if lang == "ko" else UNSPACED[lang]
    data = text.encode(codec, errors="ignore")
    assert "is not UTF-8; convert it to UTF-8, e.g. iconv -f ENCODING" in refusal(write(tmp_path, "x.txt", data))


@pytest.mark.parametrize("data, fragment", [
    ("Հայաստանիկառավարությունըհաստատեցտարեկանբյուջեն".encode("utf-16-le"), "is not UTF-8"),  # BE reads as CJK
    ("ПриветмирсегоднябудетхорошийденьипогодаЯсная".encode("koi8_r"), "is not UTF-8"),  # as UTF-16: Hangul
    (random.Random(3).randbytes(4096), "binary data (it contains NUL bytes)"),
    (bytes(range(0x4E, 0x6E)) * 40, "is not UTF-8"),  # ASCII-range pairs: CJK as UTF-16, yet valid 8-bit text
])
def test_utf16_look_alikes_without_nul_bytes_are_not_read_as_utf16(tmp_path, data, fragment):
    try:
        doc = load_document(write(tmp_path, "x.txt", data))
    except TmixError as err:
        assert fragment in str(err), err
        return
    assert not any("byte-order mark" in note for note in doc.notes), doc.notes
