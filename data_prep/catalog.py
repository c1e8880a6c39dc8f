"""The registry table: the public datasets Uni-Hema trains on, one ``DatasetSpec`` each.

Grouped as in the official release (segmentation, detection, classification, then the
sources of VQA/MLM text). ``verified=True`` marks entries converted here from the real
files (../shared/datasets); for the others, the layout and options follow the datasets'
own documentation as we know it, and ``notes`` says what to check after downloading.
Options can be overridden per run (``--option key=value``) without editing this table.
Upstream locations we are not sure of say "see upstream" with the paper or host to search.
"""

from __future__ import annotations

from data_prep.spec import DatasetSpec

# Matek et al. use three-letter folder names; these are the official single-cell classes.
_MATEK_BMC = {
    "ABE": "abnormal eosinophil", "ART": "artefact", "BAS": "basophil", "BLA": "blast", "EBO": "erythroblast",
    "EOS": "eosinophil", "FGC": "faggot cell", "HAC": "hairy cell", "KSC": "smudge cell",
    "LYI": "immature lymphocyte", "LYT": "lymphocyte", "MMZ": "metamyelocyte", "MON": "monocyte",
    "MYB": "myelocyte", "NGB": "band neutrophil", "NGS": "segmented neutrophil", "NIF": "not identifiable",
    "OTH": "other cell", "PEB": "proerythroblast", "PLM": "plasma cell", "PMO": "promyelocyte",
}
_MATEK_AML = {
    "BAS": "basophil", "EBO": "erythroblast", "EOS": "eosinophil", "KSC": "smudge cell",
    "LYA": "atypical lymphocyte", "LYT": "lymphocyte", "MMZ": "metamyelocyte", "MOB": "monoblast",
    "MON": "monocyte", "MYB": "myelocyte", "MYO": "myeloblast", "NGB": "band neutrophil",
    "NGS": "segmented neutrophil", "PMB": "promyelocyte", "PMO": "promyelocyte",
}
# PBC folder names; "ig" holds promyelocytes, myelocytes and metamyelocytes together.
_PBC = {"ig": "immature granulocyte", "immature granulocytes": "immature granulocyte",
        "BA": "basophil", "EO": "eosinophil", "ERB": "erythroblast", "LY": "lymphocyte", "MO": "monocyte",
        "NEUTROPHIL": "neutrophil", "SNE": "segmented neutrophil", "BNE": "band neutrophil",
        "PLT": "platelet", "thrombocyte": "platelet"}
_WBC5 = {"Baso": "basophil", "Eosi": "eosinophil", "Lymp": "lymphocyte", "Mono": "monocyte", "Neut": "neutrophil",
         "basophils": "basophil", "eosinophils": "eosinophil", "lymphocytes": "lymphocyte",
         "monocytes": "monocyte", "neutrophils": "neutrophil"}
_FIELD = {"RBC": "RBC", "WBC": "WBC", "Platelets": "platelet", "Platelet": "platelet", "PLT": "platelet"}
_BINARY_CELL = {"values": {0: "background", 255: "cell"}}

SEGMENTATION = [
    DatasetSpec(
        name="malaria_detection_2019", title="Malaria-Detection-2019", tasks=("segmentation",),
        diseases=("malaria",), annotation="binary masks of infected cells", license="see upstream",
        upstream="see upstream: 'Malaria-Detection-2019' as cited by the Uni-Hema paper",
        layout="images/*.{jpg,png}, masks/<stem>.png (0 background, 255 cell)", converter="masks",
        notes="layout unverified: adjust images/masks/mask_name after download"),
    DatasetSpec(
        name="nuclick", title="NuClick hemato (WBC) segmentation set", tasks=("segmentation",),
        diseases=("normal", "leukemia"), annotation="per-image instance label masks", license="CC-BY-NC-SA-4.0",
        upstream="https://warwick.ac.uk/fac/cross_fac/tia/data/nuclick/ (hemato data)",
        layout="images/*.png, masks/<stem>.png (one value per instance)", converter="masks",
        options={"mode": "instances"}, notes="check whether masks ship as .png label images or .npy"),
    DatasetSpec(
        name="krd_wbc_seg", title="KRD-WBC (segmentation)", tasks=("segmentation",), diseases=("normal",),
        annotation="binary WBC masks", license="see upstream",
        upstream="see upstream: KRD-WBC dataset (Kurdistan region WBC images, Mendeley Data)",
        layout="images/*.jpg, masks/<stem>.png", converter="masks", notes="layout unverified"),
    DatasetSpec(
        name="wbc_image_dataset", title="WBC Image Dataset (Jiangxi Tecom + CellaVision)",
        tasks=("segmentation",), diseases=("normal",),
        annotation="colour-coded masks: 0 background, 128 cytoplasm, 255 nucleus", license="see upstream",
        upstream="https://github.com/zxaoyou/segmentation_WBC (Zheng et al., Micron 2018)",
        layout="Dataset 1/<n>.bmp + <n>.png (300 Jiangxi Tecom images), Dataset 2/<n>.bmp + <n>.png "
               "(100 CellaVision images)", converter="masks",
        options={"images": "Dataset *", "masks": "Dataset *", "image_pattern": "*.bmp", "mode": "values",
                 "values": {0: "background", 128: "cell", 255: "cell"}, "snap": True},
        notes="nucleus and cytoplasm both map to 'cell': the official segmentation space has 2 classes"),
    DatasetSpec(
        name="raabin_wbc_seg", title="Raabin-WBC ground-truth segmentation subset", tasks=("segmentation",),
        diseases=("normal",), annotation="nucleus and cytoplasm masks", license="see upstream (free for research)",
        upstream="https://raabindata.com/free-data/ (Raabin-WBC, 'Ground Truth' part)",
        layout="images/*.jpg, masks/<stem>.png", converter="masks", options={"snap": True, **_BINARY_CELL,
                                                                            "mode": "values"},
        notes="layout unverified; the nucleus/cytoplasm values may need a values map"),
    DatasetSpec(
        name="erythrocytesidb", title="ErythrocytesIDB (sickle cell)", tasks=("segmentation",),
        diseases=("sickle cell disease",), annotation="binary masks of erythrocytes", license="see upstream",
        upstream="see upstream: erythrocytesIDB, Universitat de les Illes Balears (González-Hidalgo et al.)",
        layout="images/*.jpg, masks/<stem>.png", converter="masks", notes="layout unverified"),
    DatasetSpec(
        name="anerbc_ii", title="AneRBC-II (anemic / healthy RBC)", tasks=("segmentation",),
        diseases=("anemia", "normal"), annotation="binary RBC masks", license="see upstream",
        upstream="see upstream: AneRBC dataset (Shahzad et al., 2024)",
        layout="*/images/*.png, */masks/<stem>.png for the Anemic and Healthy folders", converter="masks",
        options={"images": "*/images", "masks": "*/masks"}, notes="layout unverified"),
    DatasetSpec(
        name="mp_idb", title="MP-IDB (Malaria Parasite Image Database)", tasks=("segmentation", "detection"),
        diseases=("malaria",), annotation="binary parasite masks per species folder", license="see upstream",
        upstream="https://github.com/andrealoddo/MP-IDB-The-Malaria-Parasite-Image-Database-for-image-"
                 "processing-and-analysis (Loddo et al., 2018)",
        layout="Falciparum|Malariae|Ovale|Vivax/img/*.jpg and <species>/gt/<same name>", converter="masks",
        options={"images": "*/img", "masks": "*/gt", "mask_name": "{name}", "instance_label": "parasite"},
        notes="boxes are the connected components of each mask; the stage letters in file names are not "
              "per parasite, so every box is 'parasite'"),
    DatasetSpec(
        name="elsafty_rbc", title="Elsafty RBC", tasks=("segmentation",), diseases=("anemia",),
        annotation="binary RBC masks", license="see upstream",
        upstream="see upstream: RBC dataset of Elsafty et al.", layout="images/*, masks/<stem>.png",
        converter="masks", notes="layout unverified"),
    DatasetSpec(
        name="bbbc041_seg", title="BBBC041Seg (P. vivax masks)", tasks=("segmentation",), diseases=("malaria",),
        annotation="binary masks for BBBC041 images", license="CC-BY-NC-SA-3.0 (BBBC041)",
        upstream="see upstream: segmentation masks derived from BBBC041",
        layout="images/*.png, masks/<stem>.png", converter="masks", notes="layout unverified"),
    DatasetSpec(
        name="ssl_seg", title="SSL Seg", tasks=("segmentation",), diseases=("normal",),
        annotation="binary cell masks", license="see upstream",
        upstream="see upstream: 'SSL Seg' as cited by the Uni-Hema paper", layout="images/*, masks/<stem>.png",
        converter="masks", notes="layout unverified"),
]

DETECTION = [
    DatasetSpec(
        name="leukemiaattri", title="LeukemiaAttri", tasks=("detection", "morphology", "vqa", "mlm"),
        diseases=("leukemia",), annotation="COCO JSON boxes, 14 WBC classes, 6 morphology attributes per box",
        license="see upstream",
        upstream="see upstream: LeukemiaAttri (Rehman et al., MICCAI 2024; intelligentMachines-ITU on GitHub)",
        layout="images/<split>/*.jpg, annotations/{train,val,test}.json", converter="coco",
        options={"annotations": {"train": "annotations/train.json", "val": "annotations/val.json",
                                 "test": "annotations/test.json"},
                 "images": {"train": "images/train", "val": "images/val", "test": "images/test"},
                 "attribute_key": "attributes"},
        notes="its 14 classes are the first 14 official detection classes; check the attribute key name"),
    DatasetSpec(
        name="m5_malaria", title="M5 malaria (multi-microscope, multi-magnification)", tasks=("detection",),
        diseases=("malaria",), annotation="COCO JSON boxes of parasite life stages", license="see upstream",
        upstream="see upstream: M5 dataset (Sultani et al., CVPR 2022)",
        layout="images/*, annotations/{train,test}.json", converter="coco",
        options={"annotations": {"train": "annotations/train.json", "test": "annotations/test.json"}},
        notes="layout unverified"),
    DatasetSpec(
        name="txl_pbc", title="TXL-PBC", tasks=("detection", "vqa", "mlm"), diseases=("normal",),
        annotation="YOLO txt: WBC, RBC, Platelet", license="see upstream",
        upstream="see upstream: TXL-PBC peripheral blood cell dataset (2024)",
        layout="images/{train,val,test}/*.jpg, labels/{train,val,test}/*.txt, data.yaml", converter="yolo",
        labels=_FIELD, text={"complete_classes": ("WBC", "platelet", "RBC")}),
    DatasetSpec(
        name="bccd", title="BCCD (Blood Cell Count and Detection)", tasks=("detection", "vqa", "mlm"),
        diseases=("normal",), annotation="Pascal VOC XML boxes: RBC, WBC, Platelets", license="MIT",
        upstream="https://github.com/Shenggan/BCCD_Dataset (folder BCCD/)",
        layout="Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/{train,val,test}.txt", converter="voc",
        labels=_FIELD, text={"complete_classes": ("WBC", "platelet")}, split="upstream ImageSets/Main",
        notes="RBC labelling is incomplete: RBC counts and absence are never asked", verified=True),
    DatasetSpec(
        name="sickle_cell_tushabe", title="Sickle-cell (Tushabe)", tasks=("detection",),
        diseases=("sickle cell disease",), annotation="YOLO txt: sickle and normal cells", license="see upstream",
        upstream="see upstream: sickle cell dataset of F. Tushabe et al. (Uganda)",
        layout="images/*, labels/*.txt, classes.txt or data.yaml", converter="yolo",
        labels={"sickle": "Sickle Cells", "sickle cell": "Sickle Cells", "sickle cells": "Sickle Cells",
                "normal": "RBC", "normal cell": "RBC"}, notes="layout unverified"),
    DatasetSpec(
        name="plasmodium", title="Plasmodium", tasks=("detection",), diseases=("malaria",),
        annotation="Pascal VOC XML boxes", license="see upstream",
        upstream="see upstream: 'Plasmodium' detection set as cited by the Uni-Hema paper",
        layout="Annotations/*.xml, JPEGImages/*", converter="voc", notes="layout unverified"),
    DatasetSpec(
        name="plasmodium_phone", title="Plasmodium (phone camera, thick smears)", tasks=("detection",),
        diseases=("malaria",), annotation="XML boxes per image", license="see upstream",
        upstream="see upstream: Makerere AI Lab microscopy datasets (Quinn et al., 2016)",
        layout="images/*.jpg, annotations/<stem>.xml", converter="voc",
        options={"annotations": "annotations", "images": "images"}, notes="layout unverified"),
    DatasetSpec(
        name="tuberculosis_phone", title="Tuberculosis (phone camera, sputum smears)", tasks=("detection",),
        diseases=("tuberculosis",), annotation="XML boxes per image", license="see upstream",
        upstream="see upstream: Makerere AI Lab microscopy datasets (Quinn et al., 2016)",
        layout="images/*.jpg, annotations/<stem>.xml", converter="voc",
        options={"annotations": "annotations", "images": "images"},
        labels={"bacillus": "TBbacillus", "tb": "TBbacillus"}, notes="layout unverified"),
    DatasetSpec(
        name="bbbc041", title="BBBC041 P. vivax (malaria) blood smears", tasks=("detection",),
        diseases=("malaria",), annotation="Broad JSON boxes (r/c): RBC, leukocyte, ring, trophozoite, "
                                          "schizont, gametocyte, difficult",
        license="CC-BY-NC-SA-3.0", upstream="https://bbbc.broadinstitute.org/BBBC041",
        layout="images/*.png, training.json, test.json", converter="bbbc041_json",
        labels={"red blood cell": "RBC"}, split="upstream training/test files"),
    DatasetSpec(
        name="nih_nlm_thick_pf", title="NIH-NLM thick smears (P. falciparum)", tasks=("detection",),
        diseases=("malaria",), annotation="point/circle annotations per image (parasites, WBCs)",
        license="see upstream",
        upstream="see upstream: NLM malaria datasets (lhncbc.nlm.nih.gov, malaria datasheet)",
        layout="images/*.jpg, GT/<stem>.txt", converter="points",
        options={"per_image": "GT/{stem}.txt", "header": False, "skip_rows": 1,
                 "columns": {"class": 1, "x": 3, "y": 4}, "box_size": 40},
        labels={"Parasitized": "plasmodium", "Parasite": "plasmodium", "White_Blood_Cell": "WBC"},
        notes="column indices follow our reading of the NLM files: check one file and adjust"),
    DatasetSpec(
        name="nih_nlm_thick_pv", title="NIH-NLM thick smears (P. vivax)", tasks=("detection",),
        diseases=("malaria",), annotation="point/circle annotations per image (parasites, WBCs)",
        license="see upstream",
        upstream="see upstream: NLM malaria datasets (lhncbc.nlm.nih.gov, malaria datasheet)",
        layout="images/*.jpg, GT/<stem>.txt", converter="points",
        options={"per_image": "GT/{stem}.txt", "header": False, "skip_rows": 1,
                 "columns": {"class": 1, "x": 3, "y": 4}, "box_size": 40},
        labels={"Parasitized": "plasmodium", "Parasite": "plasmodium", "White_Blood_Cell": "WBC"},
        notes="column indices follow our reading of the NLM files: check one file and adjust"),
    DatasetSpec(
        name="parasite", title="Parasite", tasks=("detection",), diseases=("malaria", "leishmaniasis"),
        annotation="YOLO txt", license="see upstream",
        upstream="see upstream: 'Parasite' detection set as cited by the Uni-Hema paper",
        layout="images/*, labels/*.txt, data.yaml", converter="yolo",
        labels={"leishmania": "leishman_parasite"}, notes="layout unverified"),
    DatasetSpec(
        name="acevedo_det", title="Acevedo (PBC) with cell boxes", tasks=("detection",), diseases=("normal",),
        annotation="YOLO txt boxes on PBC images", license="CC-BY-4.0",
        upstream="see upstream: box annotations of the PBC dataset (Acevedo et al., 2020)",
        layout="images/*.jpg, labels/*.txt, data.yaml", converter="yolo",
        labels={"ig": None, "erythroblast": None, "PLT": "platelet", "thrombocyte": "platelet"},
        notes="which box annotation of PBC the paper used is unverified; ig and erythroblast have no detection "
              "class and are left out (listed) until EXTRA_DETECTION_CLASSES gains them"),
    DatasetSpec(
        name="bio_net", title="Bio-Net", tasks=("detection",), diseases=("normal",),
        annotation="YOLO txt", license="see upstream",
        upstream="see upstream: 'Bio-Net' as cited by the Uni-Hema paper", layout="images/*, labels/*.txt",
        converter="yolo", labels=_FIELD, notes="layout unverified"),
    DatasetSpec(
        name="raabin_m1", title="Raabin-M1", tasks=("detection",), diseases=("normal",),
        annotation="YOLO txt WBC boxes", license="see upstream (free for research)",
        upstream="see upstream: https://raabindata.com/free-data/", layout="images/*, labels/*.txt",
        converter="yolo", labels=_FIELD, notes="layout unverified"),
    DatasetSpec(
        name="raabin_m2", title="Raabin-M2", tasks=("detection",), diseases=("normal",),
        annotation="YOLO txt WBC boxes", license="see upstream (free for research)",
        upstream="see upstream: https://raabindata.com/free-data/", layout="images/*, labels/*.txt",
        converter="yolo", labels=_FIELD, notes="layout unverified"),
]

CLASSIFICATION = [
    DatasetSpec(
        name="bmc_matek", title="Bone marrow cytomorphology (Matek et al., 2021)", tasks=("classification",),
        diseases=("leukemia", "myelodysplasia", "lymphoma"), annotation="one folder per class (21 abbreviations)",
        license="CC-BY-4.0 (TCIA)",
        upstream="see upstream: TCIA collection 'Bone-Marrow-Cytomorphology_MLL_Helmholtz_Fraunhofer'",
        layout="BM_cytomorphology_data/<ABBR>/[<subfolder>/]*.jpg", converter="class_folders",
        options={"root": "BM_cytomorphology_data"}, labels=_MATEK_BMC),
    DatasetSpec(
        name="aml_matek", title="AML cytomorphology LMU (Matek et al., 2019)", tasks=("classification",),
        diseases=("acute myeloid leukemia",), annotation="one folder per class (15 abbreviations)",
        license="CC-BY-3.0 (TCIA)", upstream="see upstream: TCIA collection 'AML-Cytomorphology_LMU'",
        layout="AML-Cytomorphology_LMU/<ABBR>/*.tiff", converter="class_folders",
        options={"root": "AML-Cytomorphology_LMU"}, labels=_MATEK_AML,
        notes="TIFF images are stored as lossless PNG"),
    DatasetSpec(
        name="raabin_wbc", title="Raabin-WBC (classification)", tasks=("classification",), diseases=("normal",),
        annotation="one folder per class inside Train/TestA/TestB", license="see upstream (free for research)",
        upstream="https://raabindata.com/free-data/", layout="Train/<class>/*.jpg, TestA/<class>/*.jpg, "
                                                             "TestB/<class>/*.jpg",
        converter="class_folders", options={"root": "."}, labels=_WBC5, split="upstream Train/TestA/TestB"),
    DatasetSpec(
        name="warty_pig", title="Warty Pig blood cells", tasks=("classification",), diseases=("normal",),
        annotation="one folder per class", license="see upstream",
        upstream="see upstream: Visayan warty pig blood cell images as cited by the Uni-Hema paper",
        layout="<class>/*.jpg", converter="class_folders", options={"root": "."}, labels=_WBC5,
        notes="layout unverified"),
    DatasetSpec(
        name="lisc", title="LISC (Leukocyte Images for Segmentation and Classification)",
        tasks=("classification",), diseases=("normal",), annotation="one folder per class (BMP)",
        license="see upstream", upstream="see upstream: LISC (Rezatofighi & Soltanian-Zadeh, 2011)",
        layout="Baso|eosi|lymp|mixt|mono|neut/*.bmp", converter="class_folders", options={"root": "."},
        labels={**_WBC5, "mixt": None}, notes="'mixt' (several cells per image) is left out on purpose"),
    DatasetSpec(
        name="krd_wbc_cls", title="KRD-WBC (classification)", tasks=("classification",), diseases=("normal",),
        annotation="one folder per class", license="see upstream",
        upstream="see upstream: KRD-WBC dataset (Mendeley Data)", layout="<class>/*.jpg", converter="class_folders",
        options={"root": "."}, labels=_WBC5, notes="layout unverified"),
    DatasetSpec(
        name="bccd_cls", title="BCCD white-cell subtypes (augmented crops)", tasks=("classification",),
        diseases=("normal",), annotation="one folder per class in TRAIN/TEST", license="MIT",
        upstream="https://github.com/Shenggan/BCCD_Dataset (dataset2-master, via Kaggle 'Blood Cell Images')",
        layout="dataset2-master/images/{TRAIN,TEST,TEST_SIMPLE}/{EOSINOPHIL,LYMPHOCYTE,MONOCYTE,NEUTROPHIL}/*.jpeg",
        converter="class_folders", options={"root": "dataset2-master/images"},
        split="upstream TRAIN/TEST folders", notes="TEST_SIMPLE counts as test; the duplicate report shows overlap"),
    DatasetSpec(
        name="hrls", title="HRLS", tasks=("classification",), diseases=("leukemia",),
        annotation="one folder per class", license="see upstream",
        upstream="see upstream: 'HRLS' as cited by the Uni-Hema paper", layout="<class>/*",
        converter="class_folders", options={"root": "."}, notes="layout and classes unverified"),
    DatasetSpec(
        name="apl_aml", title="APL vs AML single cells", tasks=("classification",),
        diseases=("acute promyelocytic leukemia", "acute myeloid leukemia"), annotation="one folder per class",
        license="see upstream", upstream="see upstream: APL/AML single-cell images (Sidhom et al., 2021)",
        layout="<class>/*", converter="class_folders", options={"root": "."},
        labels={"APL": "promyelocyte", "AML": "blast"},
        notes="layout and classes unverified; APL cells are abnormal promyelocytes, a detection-only class"),
    DatasetSpec(
        name="white_blood_cell_dataset", title="White-Blood-Cell-Dataset", tasks=("classification",),
        diseases=("normal",), annotation="one folder per class", license="see upstream",
        upstream="see upstream: 'White-Blood-Cell-Dataset' as cited by the Uni-Hema paper", layout="<class>/*",
        converter="class_folders", options={"root": "."}, labels=_WBC5, notes="layout unverified"),
    DatasetSpec(
        name="pbc", title="PBC (Acevedo et al., 2020)", tasks=("classification", "vqa", "mlm"),
        diseases=("normal",), annotation="one folder per class (8 classes)", license="CC-BY-4.0",
        upstream="https://data.mendeley.com/datasets/snkd93bnjr/1",
        layout="PBC_dataset_normal_DIB/{basophil,eosinophil,erythroblast,ig,lymphocyte,monocyte,neutrophil,"
               "platelet}/*.jpg", converter="class_folders", options={"root": "PBC_dataset_normal_DIB"},
        labels=_PBC),
    DatasetSpec(
        name="rv_pbs", title="RV PBS", tasks=("classification",), diseases=("normal",),
        annotation="one folder per class", license="see upstream",
        upstream="see upstream: 'RV PBS' as cited by the Uni-Hema paper", layout="<class>/*",
        converter="class_folders", options={"root": "."}, labels=_WBC5, notes="layout unverified"),
    DatasetSpec(
        name="pbc_8_da", title="PBC-8-DA", tasks=("classification",), diseases=("normal",),
        annotation="one folder per class (8 PBC classes)", license="see upstream",
        upstream="see upstream: 'PBC-8-DA' as cited by the Uni-Hema paper", layout="<class>/*",
        converter="class_folders", options={"root": "."}, labels=_PBC,
        notes="derived from PBC: the duplicate report shows images shared with pbc"),
    DatasetSpec(
        name="c_nmc_2019", title="C-NMC 2019 (ALL challenge, ISBI 2019)", tasks=("classification",),
        diseases=("acute lymphoblastic leukemia",), annotation="folders all/hem inside fold_0..2 (BMP)",
        license="CC-BY-3.0 (TCIA)", upstream="see upstream: TCIA collection 'C-NMC 2019'",
        layout="C-NMC_training_data/fold_{0,1,2}/{all,hem}/*.bmp", converter="class_folders",
        options={"root": "C-NMC_training_data", "class_level": 1, "split_folders": False},
        labels={"all": "lymphoblast", "hem": "lymphocyte"},
        notes="'hem' are normal B-lymphoid precursors: mapped to the closest official class, lymphocyte"),
    DatasetSpec(
        name="bloodmnist", title="BloodMNIST (MedMNIST v2)", tasks=("classification",), diseases=("normal",),
        annotation="NumPy archive of images and label indices", license="CC-BY-4.0",
        upstream="https://medmnist.com/ (bloodmnist.npz)", layout="bloodmnist.npz (or bloodmnist_224.npz)",
        converter="npz_arrays",
        options={"file": "bloodmnist.npz",
                 "class_names": ["basophil", "eosinophil", "erythroblast", "immature granulocyte", "lymphocyte",
                                 "monocyte", "neutrophil", "platelet"]},
        split="upstream train/val/test arrays",
        notes="resized PBC: pixel hashes do not match PBC, so cross-dataset duplicates are not detected"),
    DatasetSpec(
        name="aml_hehr", title="AML Hehr (MLL Helmholtz single-cell images)", tasks=("classification",),
        diseases=("acute myeloid leukemia",), annotation="one folder per class", license="CC-BY-4.0 (TCIA)",
        upstream="see upstream: TCIA collection 'AML-Cytomorphology_MLL_Helmholtz' (Hehr et al., 2023)",
        layout="<class>/*", converter="class_folders", options={"root": "."}, labels=_MATEK_BMC,
        notes="labels there are per patient; which single-cell labels the paper used is unverified"),
]

TEXT_SOURCES = [
    DatasetSpec(
        name="pbc_wbcatt", title="PBC subset with WBCAtt attributes (../shared/datasets/pbc_wbcatt)",
        tasks=("classification", "morphology", "vqa", "mlm"), diseases=("normal",),
        annotation="class folders + WBCAtt CSV rows (11 attributes) joined by file name",
        license="CC-BY-4.0 (PBC images); MIT (WBCAtt attributes)",
        upstream="https://data.mendeley.com/datasets/snkd93bnjr/1 (PBC) and https://github.com/apple2373/wbcatt",
        layout="images/<class>/*.jpg, wbcatt/pbc_attr_v1_{train,val}.csv", converter="class_folders",
        options={"root": "images", "tables": {"train": "wbcatt/pbc_attr_v1_train.csv",
                                              "val": "wbcatt/pbc_attr_v1_val.csv"}},
        labels=_PBC, test_from_train=0.1, verified=True,
        split="upstream WBCAtt train/val where a row exists (10% of its train moved to test by content hash, "
              "so every class is in test), else content hash"),
    DatasetSpec(
        name="wbcatt", title="WBCAtt on the full PBC dataset", tasks=("classification", "morphology", "vqa", "mlm"),
        diseases=("normal",), annotation="class folders + WBCAtt CSVs (train/val/test)",
        license="CC-BY-4.0 (PBC images); MIT (WBCAtt attributes)",
        upstream="https://github.com/apple2373/wbcatt (attributes) + https://data.mendeley.com/datasets/snkd93bnjr/1",
        layout="PBC_dataset_normal_DIB/<class>/*.jpg, pbc_attr_v1_{train,val,test}.csv", converter="class_folders",
        options={"root": "PBC_dataset_normal_DIB",
                 "tables": {"train": "pbc_attr_v1_train.csv", "val": "pbc_attr_v1_val.csv",
                            "test": "pbc_attr_v1_test.csv"}},
        labels=_PBC, split="upstream WBCAtt splits where a row exists, else content hash"),
    DatasetSpec(
        name="custom_vqa", title="Your own QA pairs (JSON or CSV)", tasks=("vqa",), diseases=(),
        annotation="rows {image, question, answer[, split]}", license="as the source's",
        upstream="a QA file you write or collect", layout="images/*, qa.json (or qa.csv)", converter="qa",
        text={"generate": False}),
]

DATASETS = SEGMENTATION + DETECTION + CLASSIFICATION + TEXT_SOURCES
